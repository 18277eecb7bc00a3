"""The three patch formats an API server accepts, as pure functions.

- ``json_merge_patch(target, patch)``: RFC 7386 (``application/merge-patch+json``).
- ``json_patch(target, operations)``: RFC 6902 (``application/json-patch+json``) with
  RFC 6901 pointers.
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

from fluxd import jsonpointer
from fluxd.devcluster.schema import FieldSchema, ListType
from fluxd.jsonvalue import clone

__all__ = ["PatchError", "json_merge_patch", "json_patch", "strategic_merge_patch"]


class PatchError(ValueError):
    """The patch is malformed or cannot be applied to the given object."""


# --------------------------------------------------------------------------- RFC 7386


def json_merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: ``null`` deletes, objects merge, anything else replaces."""
    return _merge_patch(target, patch)


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = clone(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# --------------------------------------------------------------------------- RFC 6902


class _OpFailed(Exception):
    """Raised inside one operation; ``json_patch`` adds the operation's index and path."""


_Container = dict[str, Any] | list[Any]


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch; all operations succeed or ``PatchError`` is raised."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    # Work on a private copy so a failure halfway leaves the caller's object untouched.
    doc = clone(target)
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise PatchError(f"json patch operation {index}: must be an object")
        op = operation.get("op")
        path = operation.get("path")
        if not isinstance(op, str):
            raise PatchError(f"json patch operation {index}: missing or non-string 'op'")
        if not isinstance(path, str):
            raise PatchError(f"json patch operation {index} ({op}): missing or non-string 'path'")
        try:
            doc = _apply_operation(doc, op, path, operation)
        except _OpFailed as exc:
            raise PatchError(f"json patch operation {index} ({op} {path}): {exc}") from None
    return doc


def _apply_operation(doc: Any, op: str, path: str, operation: dict[str, Any]) -> Any:
    tokens = _parse_pointer(path)
    if op == "add":
        return _add(doc, tokens, clone(_required(operation, "value")))
    if op == "remove":
        return _remove(doc, tokens)[0]
    if op == "replace":
        value = clone(_required(operation, "value"))
        if not tokens:
            return value
        parent, token = _resolve_parent(doc, tokens)
        _get_child(parent, token)  # the target must exist
        _set_existing(parent, token, value)
        return doc
    if op == "move":
        source = _from(operation)
        if source == tokens:
            return doc
        if tokens[: len(source)] == source:
            raise _OpFailed("cannot move a value into one of its own children")
        doc, value = _remove(doc, source)
        return _add(doc, tokens, value)
    if op == "copy":
        value = clone(_get(doc, _from(operation)))
        return _add(doc, tokens, value)
    if op == "test":
        expected = _required(operation, "value")
        if not _json_equal(_get(doc, tokens), expected):
            raise _OpFailed("test failed: value differs")
        return doc
    raise _OpFailed(f"unknown op {op!r}")


def _required(operation: dict[str, Any], member: str) -> Any:
    # Presence matters, not truthiness: {"value": null} is a valid value.
    if member not in operation:
        raise _OpFailed(f"missing '{member}'")
    return operation[member]


def _from(operation: dict[str, Any]) -> list[str]:
    source = _required(operation, "from")
    if not isinstance(source, str):
        raise _OpFailed("'from' must be a string")
    try:
        return _parse_pointer(source)
    except _OpFailed as exc:
        raise _OpFailed(f"from {source}: {exc}") from None


def _parse_pointer(pointer: str) -> list[str]:
    try:
        return jsonpointer.parse(pointer)
    except jsonpointer.PointerError as exc:
        raise _OpFailed(str(exc)) from None


def _list_index(array: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(array)
    # no "-" outside add
    index = jsonpointer.array_index(token)
    if index is None:
        raise _OpFailed(f"invalid array index {token!r}")
    limit = len(array) if allow_end else len(array) - 1
    if index > limit:
        raise _OpFailed(f"array index {index} out of range (length {len(array)})")
    return index


def _get_child(container: Any, token: str) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise _OpFailed("path not found")
        return container[token]
    if isinstance(container, list):
        return container[_list_index(container, token, allow_end=False)]
    raise _OpFailed("path not found")


def _get(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens:
        node = _get_child(node, token)
    return node


def _resolve_parent(doc: Any, tokens: list[str]) -> tuple[_Container, str]:
    parent = _get(doc, tokens[:-1])
    if not isinstance(parent, dict | list):
        raise _OpFailed("path not found")
    return parent, tokens[-1]


def _set_existing(parent: _Container, token: str, value: Any) -> None:
    if isinstance(parent, dict):
        parent[token] = value
    else:
        parent[_list_index(parent, token, allow_end=False)] = value


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, token = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        parent[token] = value
    else:
        parent.insert(_list_index(parent, token, allow_end=True), value)
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    """Remove the value at ``tokens``; returns the document and the removed value."""
    if not tokens:
        raise _OpFailed("cannot remove the whole document")
    parent, token = _resolve_parent(doc, tokens)
    if isinstance(parent, dict):
        if token not in parent:
            raise _OpFailed("path not found")
        return doc, parent.pop(token)
    return doc, parent.pop(_list_index(parent, token, allow_end=False))


def _json_equal(a: Any, b: Any) -> bool:
    # Python's == says True == 1 and "1" != 1 correctly, but JSON must also tell booleans
    # from numbers, and compare containers element-wise under the same rule.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


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
