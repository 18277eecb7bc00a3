"""Strategic merge patch, the third patch format an API server accepts, as a pure function.

- ``json_merge_patch`` and ``json_patch`` (RFC 7386 and RFC 6902) live in ``fluxd.jsonpatch``.
- ``strategic_merge_patch(original, patch, schema)``: Kubernetes strategic merge patch
  (``application/strategic-merge-patch+json``), as sent by ``kubectl apply`` (client-side),
  ``kubectl patch``, ``scale``, ``annotate`` and ``label``. ``schema`` says which lists merge
  by key, which are sets and which maps are atomic.

Contract: no function mutates its arguments; every result is a fresh object that shares no
mutable part with the inputs. A patch that cannot be applied raises ``PatchError`` (a
``ValueError``) with a message naming where it failed; nothing is partially applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxd.jsonpatch import PatchError
from fluxd.jsonvalue import clone
from fluxd.schema import FieldSchema, ListType

__all__ = ["strategic_merge_patch"]


# ------------------------------------------------------------------ strategic merge patch

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"
_SET_ELEMENT_ORDER = "$setElementOrder/"
_PATCH_VALUES = ("merge", "replace", "delete")


def _is_directive(key: str) -> bool:
    # Only these are directives. Other "$"-keys are ordinary data (a CRD's JSONSchemaProps
    # has real "$ref" and "$schema" fields), so they are merged like any other key.
    return (
        key in (_PATCH, _RETAIN_KEYS)
        or key.startswith(_DELETE_FROM_PRIMITIVE_LIST)
        or key.startswith(_SET_ELEMENT_ORDER)
    )


def strategic_merge_patch(
    original: dict[str, Any], patch: dict[str, Any], schema: FieldSchema
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch to ``original`` (an object rooted at ``schema``).

    A top-level ``$patch: delete`` yields ``{}``.
    """
    if not isinstance(original, dict):
        raise PatchError("strategic merge patch: the original object must be a JSON object")
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    # Private copies let the helpers below share sub-objects freely without the result
    # aliasing anything the caller holds.
    merged = _merge_map(clone(original), clone(patch), schema, "")
    return {} if merged is None else merged


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], schema: FieldSchema, path: str
) -> dict[str, Any] | None:
    """Merge ``patch`` into ``original``; ``None`` means the map is to be deleted."""
    where = path or "/"
    directive = patch.get(_PATCH, "merge")
    if directive not in _PATCH_VALUES:
        raise PatchError(f"strategic merge patch at {where}: unknown $patch value {directive!r}")
    if directive == "delete":
        return None
    if directive == "replace":
        rest = {k: v for k, v in patch.items() if k != _PATCH}
        return _merge_map({}, rest, schema, path)

    result = dict(original)

    # Deletions from primitive lists apply to the original, before the patch's own values
    # for the same field are merged in (kubectl sends both when a list changes).
    for key, values in patch.items():
        if not key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            continue
        field = key[len(_DELETE_FROM_PRIMITIVE_LIST):]
        if not isinstance(values, list):
            raise PatchError(f"strategic merge patch at {where}: {key} must be a list")
        current = result.get(field)
        if isinstance(current, list):
            result[field] = [item for item in current if item not in values]

    for key, value in patch.items():
        if _is_directive(key):
            continue
        child_path = f"{path}/{key}"
        if value is None:
            result.pop(key, None)
            continue
        child = schema.child(key)
        current = result.get(key)
        if isinstance(value, dict):
            base = current if isinstance(current, dict) and not child.is_atomic() else {}
            merged = _merge_map(base, value, child, child_path)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            base_list = current if isinstance(current, list) else []
            result[key] = _merge_list(base_list, value, child, child_path)
        else:
            result[key] = value

    for key, order in patch.items():
        if not key.startswith(_SET_ELEMENT_ORDER):
            continue
        field = key[len(_SET_ELEMENT_ORDER):]
        if not isinstance(order, list):
            raise PatchError(f"strategic merge patch at {where}: {key} must be a list")
        current = result.get(field)
        if isinstance(current, list):
            result[field] = _reorder(current, order, schema.child(field), f"{path}/{field}")

    if _RETAIN_KEYS in patch:
        retain = patch[_RETAIN_KEYS]
        if not isinstance(retain, list):
            raise PatchError(f"strategic merge patch at {where}: $retainKeys must be a list")
        result = {k: v for k, v in result.items() if k in retain}

    return result


def _merge_key(schema: FieldSchema) -> str | None:
    spec = schema.list_spec()
    if spec.type is not ListType.MAP:
        return None
    return spec.merge_key or (spec.keys[0] if spec.keys else None)


def _merge_list(
    original: list[Any], patch: list[Any], schema: FieldSchema, path: str
) -> list[Any]:
    """Merge the patch list for field ``schema`` into ``original``."""
    item_schema = schema.item()
    replace = False
    for index, item in enumerate(patch):
        if isinstance(item, dict) and _PATCH in item:
            directive = item[_PATCH]
            if directive not in _PATCH_VALUES:
                raise PatchError(
                    f"strategic merge patch at {path}/{index}: unknown $patch value {directive!r}"
                )
            replace = replace or directive == "replace"

    if replace:
        # The list becomes exactly the patch's plain items; any other directive items in a
        # replaced list have nothing left to act on.
        plain = [
            item
            for item in patch
            if not (isinstance(item, dict) and item.get(_PATCH) in ("replace", "delete"))
        ]
        return _fresh_items(plain, item_schema, path)

    list_type = schema.list_spec().type
    merge_key = _merge_key(schema)
    if list_type is ListType.MAP and merge_key is not None:
        return _merge_keyed_list(original, patch, item_schema, merge_key, path)
    if list_type is ListType.SET:
        result = list(original)
        for item in _fresh_items(patch, item_schema, path):
            if item not in result:
                result.append(item)
        return result
    return _fresh_items(patch, item_schema, path)


def _merge_keyed_list(
    original: list[Any],
    patch: list[Any],
    item_schema: FieldSchema,
    merge_key: str,
    path: str,
) -> list[Any]:
    result = list(original)
    for index, item in enumerate(patch):
        item_path = f"{path}/{index}"
        if not isinstance(item, dict):
            raise PatchError(
                f"strategic merge patch at {item_path}: items of a list merged by "
                f"{merge_key!r} must be objects"
            )
        if merge_key not in item:
            raise PatchError(
                f"strategic merge patch at {item_path}: item lacks merge key {merge_key!r}"
            )
        key_value = item[merge_key]

        def matches(candidate: Any, key_value: Any = key_value) -> bool:
            return isinstance(candidate, dict) and candidate.get(merge_key) == key_value

        if item.get(_PATCH) == "delete":
            result = [candidate for candidate in result if not matches(candidate)]
            continue
        position = next((i for i, c in enumerate(result) if matches(c)), None)
        base = result[position] if position is not None else {}
        merged = _merge_map(base, item, item_schema, item_path)
        if position is None:
            if merged is not None:
                result.append(merged)
        elif merged is None:
            del result[position]
        else:
            result[position] = merged
    return result


def _fresh_items(items: list[Any], item_schema: FieldSchema, path: str) -> list[Any]:
    """Patch items used as-is (no original to merge with), with directives resolved."""
    result: list[Any] = []
    for index, item in enumerate(items):
        item_path = f"{path}/{index}"
        if isinstance(item, dict):
            merged = _merge_map({}, item, item_schema, item_path)
            if merged is not None:
                result.append(merged)
        elif isinstance(item, list):
            result.append(_merge_list([], item, item_schema, item_path))
        else:
            result.append(item)
    return result


def _reorder(items: list[Any], order: list[Any], schema: FieldSchema, path: str) -> list[Any]:
    """Put the items named by ``order`` first, in that order; the rest follow as they were."""
    merge_key = _merge_key(schema)
    identify: Callable[[Any], Any]
    if merge_key is not None:
        for index, entry in enumerate(order):
            if not isinstance(entry, dict) or merge_key not in entry:
                raise PatchError(
                    f"strategic merge patch at {path}: $setElementOrder entry {index} "
                    f"lacks merge key {merge_key!r}"
                )

        def identify(item: Any) -> Any:
            return item.get(merge_key) if isinstance(item, dict) else None

        wanted = [entry[merge_key] for entry in order]
    else:

        def identify(item: Any) -> Any:
            return item

        wanted = list(order)

    remaining = list(items)
    ordered = []
    for key in wanted:
        # Names of items the patch deleted (or never existed) are simply skipped.
        for index, item in enumerate(remaining):
            if identify(item) == key:
                ordered.append(remaining.pop(index))
                break
    return ordered + remaining
