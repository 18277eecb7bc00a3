"""Server-side apply and ``managedFields``.

Field ownership is a set of paths per *manager* — a (name, operation, subresource)
triple. A path is a tuple of FieldsV1 elements: ``f:<field>``, ``k:<json keys>`` for an
item of a keyed list, ``v:<json value>`` for an item of a set list. The rules follow
Kubernetes' structured-merge-diff:

- **apply** (``application/apply-patch+yaml``): a custom resource's configuration must
  first fit its schema's types (TypedPatchError; the server answers 500 without a
  reason). It is then merged into the live object (maps recursively, keyed lists by key,
  set lists by value, atomic values replaced). A field that changes value and is owned
  by another manager is a conflict (409) unless ``force``, which takes the field over;
  the message names an Update owner with its apiVersion, and an owner through a
  subresource with that subresource. The manager then owns exactly the fields of its
  configuration; fields it owned before and no longer applies are removed from the
  object unless some other manager owns them too.
- **update** (create, PUT, patches): the manager gains the fields it added or changed,
  other managers lose them, and removed fields are disowned.
- A request that sets ``metadata.managedFields`` itself replaces the record (how
  tools such as Flux hand fields over from ``kubectl``'s client-side apply); the
  request's own changes are then tracked on the new record. Entries naming the same
  manager collapse into one, the later winning, as the real server decodes them.

Server-managed metadata, ``apiVersion``/``kind`` and — for kinds with a status
subresource — ``status`` (or, for the status subresource, everything but ``status``) are
never tracked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fluxd.gotext import go_type, go_value, quote
from fluxd.schema import FieldSchema, ListType, OpenAPISchema

Path = tuple[str, ...]
FieldSet = set[Path]

_UNTRACKED_META = frozenset({
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
})


class ApplyError(ValueError):
    """The applied configuration is malformed (reported as 422/400)."""


@dataclass(frozen=True)
class Conflict:
    """A field ``path`` that the applier would change and another manager owns."""

    manager: str
    operation: str
    subresource: str
    api_version: str
    path: Path

    @property
    def owner_key(self) -> str:
        """The owner as the real server keys managers: its record entry as JSON, without
        time and fields, and without the version for an applier (whose version may change
        from one apply to the next). Conflicts are grouped and ordered by this key."""
        entry: dict[str, str] = {"manager": self.manager, "operation": self.operation}
        if self.operation != "Apply" and self.api_version:
            entry["apiVersion"] = self.api_version
        if self.subresource:
            entry["subresource"] = self.subresource
        return json.dumps(entry, separators=(",", ":"))

    @property
    def owner_text(self) -> str:
        """``"name"``, then ``with subresource "s"`` for a subresource's manager, then
        ``using <apiVersion>`` for an Update manager — never the version of an applier."""
        text = quote(self.manager)
        if self.subresource:
            text += f" with subresource {quote(self.subresource)}"
        if self.operation != "Apply":
            text += f" using {self.api_version}"
        return text


class ConflictError(Exception):
    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        super().__init__(conflict_message(conflicts))


class TypedPatchError(Exception):
    """The applied configuration has a value of another type than its schema declares.

    The real server fails to make a typed value of the configuration before it merges
    anything, and answers 500 with no reason; ``str()`` is structured-merge-diff's text:
    one ``<path>: <problem>``, or ``errors:`` and one indented line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        if len(problems) == 1:
            text = problems[0]
        else:
            text = "\n".join(["errors:", *("  " + p for p in problems)])
        super().__init__(text)


@dataclass
class Manager:
    name: str
    operation: str
    subresource: str
    api_version: str
    time: str
    fields: FieldSet

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.name, self.operation, self.subresource)


# --- FieldsV1 encoding ----------------------------------------------------------------

def _key_element(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    values = {}
    for key in keys:
        if key in item:
            values[key] = item[key]
        elif key == "protocol":
            values[key] = "TCP"  # defaulted by the server before ownership is computed
        else:
            raise ApplyError(f"associative list with keys has an element that omits key "
                             f'field "{key}"')
    return "k:" + json.dumps(values, sort_keys=True, separators=(",", ":"))


def _value_element(value: Any) -> str:
    return "v:" + json.dumps(value, sort_keys=True, separators=(",", ":"))


def to_fields_v1(fields: FieldSet) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(fields):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    # A path that is a member *and* has children is marked with "."; a leaf is {}.
    members = {p for p in fields}

    def render(node: dict[str, Any], prefix: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        children = {k: v for k, v in node.items() if k != "."}
        if children and prefix in members:
            out["."] = {}
        for key in sorted(children):
            out[key] = render(children[key], prefix + (key,))
        return out

    return render(root, ())


def from_fields_v1(tree: Any, prefix: Path = ()) -> FieldSet:
    out: FieldSet = set()
    if not isinstance(tree, dict):
        return out
    if not tree and prefix:
        out.add(prefix)
    for key, sub in tree.items():
        if key == ".":
            out.add(prefix)
        else:
            out |= from_fields_v1(sub, prefix + (key,))
    return out


def parse_managed_fields(entries: Any) -> list[Manager]:
    """The record's managers; two entries of one manager are one, the later winning (the
    real server decodes the record into a map keyed by manager)."""
    managers: list[Manager] = []
    at: dict[tuple[str, str, str], int] = {}
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        manager = Manager(
            name=str(entry.get("manager", "")),
            operation=str(entry.get("operation", "Update")),
            subresource=str(entry.get("subresource", "")),
            api_version=str(entry.get("apiVersion", "")),
            time=str(entry.get("time", "")),
            fields=from_fields_v1(entry.get("fieldsV1") or {}),
        )
        if manager.identity in at:
            managers[at[manager.identity]] = manager
        else:
            at[manager.identity] = len(managers)
            managers.append(manager)
    return managers


def render_managed_fields(managers: Iterable[Manager]) -> list[dict[str, Any]]:
    out = []
    for m in managers:
        if not m.fields:
            continue
        entry: dict[str, Any] = {
            "manager": m.name, "operation": m.operation, "apiVersion": m.api_version,
            "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(m.fields),
        }
        if m.subresource:
            entry["subresource"] = m.subresource
        out.append(entry)
    return out


def path_text(path: Path) -> str:
    """``.spec.template.spec.containers[name="app"].image`` — how conflicts name a field."""
    out = ""
    for element in path:
        kind, _, raw = element.partition(":")
        if kind == "f":
            out += "." + raw
        elif kind == "k":
            keys = json.loads(raw)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif kind == "v":
            out += f"[={raw}]"
        else:
            out += f"[{raw}]"
    return out


def conflict_message(conflicts: list[Conflict]) -> str:
    """The 409 message: one conflict on one line; several grouped by owner (ordered by the
    owner's key), each owner followed by its fields one per line."""
    if len(conflicts) == 1:
        only = conflicts[0]
        return (f"Apply failed with 1 conflict: conflict with {only.owner_text}: "
                f"{path_text(only.path)}")
    by_owner: dict[str, list[Conflict]] = {}
    for c in conflicts:
        by_owner.setdefault(c.owner_key, []).append(c)
    lines = []
    for key in sorted(by_owner):
        group = by_owner[key]
        lines.append(f"conflicts with {group[0].owner_text}:")
        lines += [f"- {path_text(c.path)}" for c in group]
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


# --- which part of an object is tracked -----------------------------------------------

def tracked(obj: dict[str, Any] | None, *, subresource: str,
            status_separate: bool) -> dict[str, Any]:
    if not obj:
        return {}
    if subresource == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    if subresource:
        return {}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "status" and status_separate:
            continue
        if key == "metadata" and isinstance(value, dict):
            meta = {k: v for k, v in value.items() if k not in _UNTRACKED_META}
            if meta:
                out[key] = meta
            continue
        out[key] = value
    return out


# --- walking values with a schema -----------------------------------------------------

def applied_fields(config: Any, schema: FieldSchema, prefix: Path = ()) -> FieldSet:
    """The fields an applied configuration sets: its leaves and its list items."""
    out: FieldSet = set()
    if isinstance(config, dict) and not schema.is_atomic():
        for key, value in config.items():
            if value is None:
                continue
            out |= applied_fields(value, schema.child(key), prefix + ("f:" + key,))
        return out
    if isinstance(config, list) and schema.list_spec().type is not ListType.ATOMIC:
        for element, item in _items(config, schema):
            path = prefix + (element,)
            out.add(path)
            out |= applied_fields(item, schema.item(), path)
        return out
    if prefix:
        out.add(prefix)
    return out


def _items(value: list[Any], schema: FieldSchema) -> Iterator[tuple[str, Any]]:
    """(path element, item) of a non-atomic list; nothing for an atomic list."""
    spec = schema.list_spec()
    if spec.type is ListType.MAP:
        for item in value:
            if not isinstance(item, dict):
                raise ApplyError("associative list item is not an object")
            yield _key_element(item, spec.keys), item
    elif spec.type is ListType.SET:
        for item in value:
            yield _value_element(item), item


def _all_paths(value: Any, schema: FieldSchema, prefix: Path, depth: int) -> FieldSet:
    """Every path of a value subtree, the node itself included where it is a member."""
    out: FieldSet = set()
    if isinstance(value, dict) and not schema.is_atomic():
        if depth >= 2 or (prefix and prefix[-1].startswith(("k:", "v:"))):
            out.add(prefix)
        for key, sub in value.items():
            out |= _all_paths(sub, schema.child(key), prefix + ("f:" + key,), depth + 1)
        return out
    if isinstance(value, list) and schema.list_spec().type is not ListType.ATOMIC:
        try:
            for element, item in _items(value, schema):
                out.add(prefix + (element,))
                out |= _all_paths(item, schema.item(), prefix + (element,), depth + 1)
        except ApplyError:
            out.add(prefix)
        return out
    out.add(prefix)
    return out


def compare(old: Any, new: Any, schema: FieldSchema, prefix: Path = (),
            depth: int = 0) -> tuple[FieldSet, FieldSet, FieldSet]:
    """(added, modified, removed) paths going from ``old`` to ``new``."""
    added: FieldSet = set()
    modified: FieldSet = set()
    removed: FieldSet = set()
    if isinstance(old, dict) and isinstance(new, dict) and not schema.is_atomic():
        for key in old.keys() | new.keys():
            path = prefix + ("f:" + key,)
            child = schema.child(key)
            if key not in new:
                removed |= _all_paths(old[key], child, path, depth + 1)
            elif key not in old:
                added |= _all_paths(new[key], child, path, depth + 1)
            else:
                a, m, r = compare(old[key], new[key], child, path, depth + 1)
                added |= a
                modified |= m
                removed |= r
        return added, modified, removed
    if (isinstance(old, list) and isinstance(new, list)
            and schema.list_spec().type is not ListType.ATOMIC):
        try:
            old_items = dict(_items(old, schema))
            new_items = dict(_items(new, schema))
        except ApplyError:
            old_items = new_items = {}
        if old_items or new_items or not (old or new):
            item_schema = schema.item()
            for element in old_items.keys() | new_items.keys():
                path = prefix + (element,)
                if element not in new_items:
                    removed |= _all_paths(old_items[element], item_schema, path, depth + 1)
                elif element not in old_items:
                    added |= _all_paths(new_items[element], item_schema, path, depth + 1)
                else:
                    a, m, r = compare(old_items[element], new_items[element], item_schema,
                                      path, depth + 1)
                    added |= a
                    modified |= m
                    removed |= r
            return added, modified, removed
    if old != new and prefix:
        modified.add(prefix)
    return added, modified, removed


def merge(live: Any, config: Any, schema: FieldSchema) -> Any:
    """The live value with an applied configuration merged in."""
    if isinstance(config, dict) and isinstance(live, dict) and not schema.is_atomic():
        out = dict(live)
        for key, value in config.items():
            if value is None:
                out.pop(key, None)
            elif key in live:
                out[key] = merge(live[key], value, schema.child(key))
            else:
                out[key] = _strip_nulls(value)
        return out
    if isinstance(config, list) and isinstance(live, list):
        spec = schema.list_spec()
        if spec.type is ListType.MAP:
            incoming = dict(_items(config, schema))
            result = []
            for element, item in _items(live, schema):
                if element in incoming:
                    result.append(merge(item, incoming.pop(element), schema.item()))
                else:
                    result.append(item)
            result.extend(_strip_nulls(item) for item in incoming.values())
            return result
        if spec.type is ListType.SET:
            return live + [v for v in config if v not in live]
    return _strip_nulls(config)


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def remove_path(obj: Any, path: Path, schema: FieldSchema) -> Any:
    """``obj`` without the field or list item at ``path`` (unchanged if absent)."""
    if not path:
        return obj
    head, rest = path[0], path[1:]
    if isinstance(obj, dict) and head.startswith("f:"):
        key = head[2:]
        if key not in obj:
            return obj
        out = dict(obj)
        if rest:
            out[key] = remove_path(obj[key], rest, schema.child(key))
        else:
            del out[key]
        return out
    if isinstance(obj, list) and head.startswith(("k:", "v:")):
        result = []
        for element, item in _items(obj, schema):
            if element != head:
                result.append(item)
            elif rest:
                result.append(remove_path(item, rest, schema.item()))
        return result
    return obj


def value_at(obj: Any, path: Path, schema: FieldSchema) -> tuple[bool, Any]:
    for element in path:
        if isinstance(obj, dict) and element.startswith("f:") and element[2:] in obj:
            schema = schema.child(element[2:])
            obj = obj[element[2:]]
        elif isinstance(obj, list) and element.startswith(("k:", "v:")):
            found = dict(_items(obj, schema)).get(element, _MISSING)
            if found is _MISSING:
                return False, None
            schema = schema.item()
            obj = found
        else:
            return False, None
    return True, obj


_MISSING = object()


# --- the types of an applied custom resource ---------------------------------------

def check_types(config: dict[str, Any], schema: FieldSchema) -> None:
    """Raise TypedPatchError where ``config`` holds a value its custom resource's schema
    types otherwise (objects, arrays, strings, numbers, booleans; a null fits any type).
    Built-in kinds' schemas carry no types here: nothing is checked for them.

    Only types are checked here: fields the schema does not declare are left to pruning,
    and everything else (formats, bounds, enums) to validation, which reports 422."""
    problems: list[str] = []
    for key, value in config.items():
        if key not in ("apiVersion", "kind", "metadata"):
            _check_type(value, schema.child(key), ("f:" + key,), problems)
    if problems:
        raise TypedPatchError(problems)


def _check_type(value: Any, schema: FieldSchema, path: Path, problems: list[str]) -> None:
    if value is None or not isinstance(schema, OpenAPISchema):
        return
    node = schema.node
    kind = None if node.get("x-kubernetes-int-or-string") else node.get("type")
    if kind == "object" and isinstance(value, dict):
        for key, sub in value.items():
            _check_type(sub, schema.child(key), path + ("f:" + key,), problems)
    elif kind == "array" and isinstance(value, list):
        for index, item in enumerate(value):
            _check_type(item, schema.item(), path + (_item_element(item, index, schema),),
                        problems)
    else:
        problem = _type_problem(kind, value)
        if problem:
            problems.append(f"{path_text(path)}: {problem}")


def _type_problem(kind: Any, value: Any) -> str | None:
    # structured-merge-diff prints the offending value with Go's fmt verbs: a map or list
    # problem as %v of the value's holder, a scalar one as %T, %#v or %v as below.
    if kind == "object":
        return f"expected map, got &{{{go_value(value)}}}"
    if kind == "array":
        return f"expected list, got &{{{go_value(value)}}}"
    if kind == "string" and not isinstance(value, str):
        shown = go_value(value, syntax=True)
        return f"expected string, got &value.valueUnstructured{{Value:{shown}}}"
    if kind in ("integer", "number") and (
            isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"expected numeric (int or float), got {go_type(value)}"
    if kind == "boolean" and not isinstance(value, bool):
        return f"expected boolean, got &{{{go_value(value)}}}"
    return None


def _item_element(item: Any, index: int, schema: FieldSchema) -> str:
    """A list item's path element: its keys, its value, or (atomic list) its index."""
    spec = schema.list_spec()
    if spec.type is ListType.MAP and isinstance(item, dict):
        try:
            return _key_element(item, spec.keys)
        except ApplyError:
            pass
    elif spec.type is ListType.SET:
        return _value_element(item)
    return f"i:{index}"


# --- the two operations ---------------------------------------------------------------

def apply(live: dict[str, Any] | None, config: dict[str, Any], *, manager: str, force: bool,
          schema: FieldSchema, subresource: str, status_separate: bool, api_version: str,
          now: str) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` (raises TypedPatchError, then
    ConflictError)."""
    check_types(config, schema)
    live = live or {}
    managers = parse_managed_fields((live.get("metadata") or {}).get("managedFields"))
    config_part = tracked(config, subresource=subresource, status_separate=status_separate)
    new_set = applied_fields(config_part, schema)

    merged = merge(live, config_part, schema)
    live_part = tracked(live, subresource=subresource, status_separate=status_separate)
    merged_part = tracked(merged, subresource=subresource, status_separate=status_separate)
    added, modified, _ = compare(live_part, merged_part, schema)
    changed = added | modified
    identity = (manager, "Apply", subresource)

    conflicts = []
    for m in managers:
        if m.identity == identity:
            continue
        for path in sorted(m.fields & changed):
            conflicts.append(Conflict(m.name, m.operation, m.subresource, m.api_version,
                                      path))
    if conflicts and not force:
        raise ConflictError(conflicts)

    previous: FieldSet = set()
    for m in managers:
        if m.identity == identity:
            previous = m.fields
        else:
            m.fields -= changed
    others: FieldSet = set().union(*(m.fields for m in managers if m.identity != identity))
    # Parents go before children (a removed list item takes its fields along); a field
    # that still has an owned field below it stays.
    kept = {path[:i] for path in others | new_set for i in range(1, len(path) + 1)}
    for path in sorted(previous - new_set - others, key=len):
        if path not in kept:
            merged = remove_path(merged, path, schema)

    mine = Manager(manager, "Apply", subresource, api_version, now, new_set)
    rest = [m for m in managers if m.identity != identity]
    if any(m.identity == identity for m in managers):
        ordered = [mine if m.identity == identity else m for m in managers]
    else:
        ordered = [*rest, mine]
    result: dict[str, Any] = dict(merged)
    result["metadata"] = dict(result.get("metadata") or {})
    result["metadata"]["managedFields"] = render_managed_fields(ordered)
    return result


def record_update(old: dict[str, Any] | None, new: dict[str, Any], *, manager: str,
                  schema: FieldSchema, subresource: str, status_separate: bool,
                  api_version: str, now: str) -> list[dict[str, Any]]:
    """managedFields for ``new`` after an update (create/PUT/patch) by ``manager``."""
    new_meta = new.get("metadata") or {}
    old_meta = (old or {}).get("metadata") or {}
    requested = new_meta.get("managedFields")
    if requested is not None and requested != old_meta.get("managedFields"):
        # The client rewrote the record itself; `[{}]` (or []) resets it. Otherwise the
        # rewritten record is the one this write's own changes are then tracked on.
        if not [e for e in requested if isinstance(e, dict) and e]:
            return []
        managers = parse_managed_fields(requested)
    else:
        managers = parse_managed_fields(old_meta.get("managedFields"))
    added, modified, removed = compare(
        tracked(old, subresource=subresource, status_separate=status_separate),
        tracked(new, subresource=subresource, status_separate=status_separate),
        schema,
    )
    changed = added | modified
    identity = (manager, "Update", subresource)
    mine = next((m for m in managers if m.identity == identity), None)
    for m in managers:
        if m is not mine:
            m.fields -= changed | removed
    if not changed and mine is None:
        return render_managed_fields(managers)
    if mine is None:
        mine = Manager(manager, "Update", subresource, api_version, now, set())
        managers.append(mine)
    if changed:
        mine.time = now
        mine.api_version = api_version
    mine.fields = (mine.fields | changed) - removed
    return render_managed_fields(managers)
