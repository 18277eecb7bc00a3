"""kustomize's field specs: where a transformer reads or writes in an object.

A field spec is a ``/``-separated path (``\\/`` is a slash inside one name, ``name[]`` a
list), whether missing fields are created, and the group, version and kind it is limited
to. ``walk`` follows the path as kustomize's field spec filter does: a list met on the
way is walked element by element with the same remaining path, a missing or null field
ends the walk unless the spec creates it (a ``name[]`` part never creates, and turns a
null into an empty list), and a scalar in the way raises ``Unsupported`` (kustomize's
error). ``set_value(holder, key)`` is called for each field reached, ``holder[key]``
being its value. Used by every transformer of the engine: one walker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fluxd.kustomize.kyaml import Unsupported

__all__ = ["MAX_DEPTH", "CreateKind", "FieldSpec", "SetValue", "apply_field_spec", "gvk_of",
           "walk"]

Obj = dict[str, Any]
#: what a field spec does with a field it reaches: ``set_value(holder, key)``, where
#: ``holder[key]`` is the field's value
SetValue = Callable[[Any, Any], None]
#: what a missing last field is created as, for specs that create (None: never created)
CreateKind = Literal["map", "scalar"] | None

#: how deep lists may nest inside one another on a field spec's path, or objects nest
#: under a containers walk: far beyond any real manifest, short of Python's stack
MAX_DEPTH = 200


@dataclass(frozen=True)
class FieldSpec:
    """Where a transformer writes: a ``/``-separated path (``\\/`` is a slash inside a
    name, ``name[]`` a list), whether missing fields are created, and the group, version
    and kind it is limited to (empty: any)."""

    path: str
    create: bool = False
    group: str = ""
    version: str = ""
    kind: str = ""
    #: the path's parts, ``\\/`` unescaped
    parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[str] = []
        for piece in self.path.split("/"):
            if parts and parts[-1].endswith("\\"):
                parts[-1] = parts[-1][:-1] + "/" + piece
            else:
                parts.append(piece)
        object.__setattr__(self, "parts", tuple(parts))

    @classmethod
    def parse(cls, value: object) -> FieldSpec:
        """A field spec as a kustomization writes it (``path``, ``create``, ``group``,
        ``version``, ``kind``)."""
        if not isinstance(value, Mapping) or set(value) - {
                "path", "create", "group", "version", "kind"}:
            raise Unsupported(f"field spec {value!r}")
        text = {key: value.get(key) or "" for key in ("path", "group", "version", "kind")}
        create = value.get("create") or False
        if not all(isinstance(item, str) for item in text.values()) or not isinstance(
                create, bool):
            raise Unsupported(f"field spec {value!r}")
        return cls(text["path"], create, text["group"], text["version"], text["kind"])

    def selects(self, group: str, version: str, kind: str) -> bool:
        """Whether the spec applies to this group, version and kind."""
        return ((not self.group or self.group == group)
                and (not self.version or self.version == version)
                and (not self.kind or self.kind == kind))


def gvk_of(obj: Obj) -> tuple[str, str, str]:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise Unsupported("an object without apiVersion or kind")
    group, slash, version = api_version.partition("/")
    return (group, version, kind) if slash else ("", api_version, kind)


def apply_field_spec(obj: Obj, spec: FieldSpec, set_value: SetValue,
                     create_kind: CreateKind) -> None:
    """kustomize's field spec filter: if ``spec`` selects the object's kind, walk its
    path and call ``set_value`` on each field reached (see the module's docstring); a
    value of the wrong kind in the way raises ``Unsupported``."""
    if spec.selects(*gvk_of(obj)):
        walk(obj, spec, set_value, create_kind)


def walk(obj: Obj, spec: FieldSpec, set_value: SetValue, create_kind: CreateKind) -> None:
    """Follow ``spec``'s path in ``obj`` whatever its kind, calling ``set_value`` on each
    field reached."""
    _walk([obj], 0, spec.parts, 0, spec, set_value, create_kind)


def _walk(holder: Any, key: Any, parts: tuple[str, ...], depth: int, spec: FieldSpec,
          set_value: SetValue, create_kind: CreateKind) -> None:
    if not parts:
        set_value(holder, key)
        return
    node = holder[key]
    if depth > MAX_DEPTH:
        raise Unsupported("lists nested too deeply")
    if isinstance(node, list):
        for index in range(len(node)):
            _walk(node, index, parts, depth + 1, spec, set_value, create_kind)
        return
    if not isinstance(node, dict):
        raise Unsupported(f"{spec.path}: a value that is neither a map nor a list")
    part = parts[0]
    is_list = part.endswith("[]")
    name = part[:-2] if is_list else part
    creates = spec.create and create_kind is not None and not is_list
    value = node.get(name)
    if value is None:
        if is_list and name in node:
            node[name] = []  # kustomize takes the "[]" as the null's type
        elif not creates:
            return
        elif len(parts) > 1 or create_kind == "map":
            node[name] = {}
        else:
            node[name] = ""  # a scalar the setter overwrites
    _walk(node, name, parts[1:], depth, spec, set_value, create_kind)
