"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386), as pure functions.

- ``json_merge_patch(target, patch)``: RFC 7386 (``application/merge-patch+json``).
- ``json_patch(target, operations)``: RFC 6902 (``application/json-patch+json``) with
  RFC 6901 pointers.

One implementation for the whole of fluxd: the dev API server's patch verbs and
kustomize's JSON 6902 patches both use it. Contract: no function mutates its arguments;
every result is a fresh object that shares no mutable part with the inputs. A patch that
cannot be applied raises ``PatchError`` (a ``ValueError``) with a message naming where it
failed; nothing is partially applied.
"""

from __future__ import annotations

from typing import Any

from fluxd import jsonpointer
from fluxd.jsonvalue import clone

__all__ = ["PatchError", "json_equal", "json_merge_patch", "json_patch"]


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
        if not json_equal(_get(doc, tokens), expected):
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


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: booleans are not numbers, containers compare by element."""
    # Python's == says True == 1 and "1" != 1 correctly, but JSON must also tell booleans
    # from numbers, and compare containers element-wise under the same rule.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)
