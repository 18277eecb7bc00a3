"""Structural knowledge of object fields: which lists merge by key, which maps are atomic.

Shared by the dev API server (strategic merge patch, server-side apply) and the native
kustomize engine (which merges by these keys only at the paths its own schema knows).
Strategic merge patch and server-side apply both need to know, for a field, whether a
list is *atomic* (replaced whole), a *map* keyed by some item fields, or a *set* of
scalars. A real API server reads this from Go struct tags (built-in kinds) or from the
CRD's structural schema (custom kinds). Here:

- ``BuiltinSchema`` answers from a table of the list fields that matter for the
  built-in kinds the dev server serves (containers by name, env by name, ports by
  port+protocol, …); every other list is atomic, as in Kubernetes' defaults.
- ``OpenAPISchema`` answers from a CRD's ``openAPIV3Schema`` (``x-kubernetes-list-type``,
  ``x-kubernetes-list-map-keys``, ``x-kubernetes-map-type``); lists without a type are
  atomic, as on a real server.

A schema is navigated one step at a time: ``child(field)`` for a field of an object,
``item()`` for the element of a list.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol


class ListType(enum.Enum):
    ATOMIC = "atomic"
    MAP = "map"
    SET = "set"


@dataclass(frozen=True)
class ListSpec:
    type: ListType
    #: keys identifying an item of a MAP list (server-side apply)
    keys: tuple[str, ...] = ()
    #: the single merge key strategic merge patch uses (``patchMergeKey``); may differ
    #: from ``keys`` (container ports merge on containerPort but are keyed by
    #: containerPort+protocol for apply)
    merge_key: str | None = None


ATOMIC_LIST = ListSpec(ListType.ATOMIC)
SET_LIST = ListSpec(ListType.SET)


class FieldSchema(Protocol):
    def child(self, name: str) -> FieldSchema: ...

    def item(self) -> FieldSchema: ...

    def list_spec(self) -> ListSpec: ...

    def is_atomic(self) -> bool:
        """True for a map/struct that is owned and replaced as a whole."""
        ...


def _map(*keys: str, merge_key: str | None = None) -> ListSpec:
    return ListSpec(ListType.MAP, keys, merge_key or keys[0])


# Path suffixes (field names, "[]" for a list item) of the built-in kinds' non-atomic
# lists. The longest matching suffix wins.
_BUILTIN_LISTS: dict[tuple[str, ...], ListSpec] = {
    ("containers",): _map("name"),
    ("initContainers",): _map("name"),
    ("ephemeralContainers",): _map("name"),
    ("containers", "[]", "ports"): _map("containerPort", "protocol"),
    ("initContainers", "[]", "ports"): _map("containerPort", "protocol"),
    ("ephemeralContainers", "[]", "ports"): _map("containerPort", "protocol"),
    ("env",): _map("name"),
    ("volumes",): _map("name"),
    ("volumeMounts",): _map("mountPath"),
    ("volumeDevices",): _map("devicePath"),
    ("imagePullSecrets",): _map("name"),
    ("hostAliases",): _map("ip"),
    ("resourceClaims",): _map("name"),
    ("topologySpreadConstraints",): _map("topologyKey", "whenUnsatisfiable"),
    ("conditions",): _map("type"),
    ("ownerReferences",): _map("uid"),
    ("finalizers",): SET_LIST,
    ("metadata", "finalizers"): SET_LIST,
}

# Service ports live at spec.ports of the object root.
_ROOT_LISTS: dict[tuple[str, ...], ListSpec] = {
    ("spec", "ports"): _map("port", "protocol"),
}

# Struct fields marked ``structType=atomic`` / ``mapType=atomic`` in Kubernetes: the
# workload and Service selectors at the root's spec, and these anywhere.
_BUILTIN_ATOMIC_ROOT = (("spec", "selector"),)
_BUILTIN_ATOMIC_SUFFIXES = (("nodeSelector",),)


@dataclass(frozen=True)
class BuiltinSchema:
    path: tuple[str, ...] = ()

    def child(self, name: str) -> BuiltinSchema:
        return BuiltinSchema(self.path + (name,))

    def item(self) -> BuiltinSchema:
        return BuiltinSchema(self.path + ("[]",))

    def list_spec(self) -> ListSpec:
        spec = _ROOT_LISTS.get(self.path)
        if spec is not None:
            return spec
        for size in range(min(len(self.path), 3), 0, -1):
            spec = _BUILTIN_LISTS.get(self.path[-size:])
            if spec is not None:
                return spec
        return ATOMIC_LIST

    def is_atomic(self) -> bool:
        if self.path in _BUILTIN_ATOMIC_ROOT:
            return True
        return any(self.path[-len(s):] == s for s in _BUILTIN_ATOMIC_SUFFIXES)


_METADATA = BuiltinSchema(("metadata",))


@dataclass(frozen=True)
class OpenAPISchema:
    """Navigates a structural OpenAPI v3 schema (a CRD version's ``openAPIV3Schema``)."""

    node: dict[str, Any]
    path: tuple[str, ...] = ()

    def child(self, name: str) -> FieldSchema:
        if not self.path and name == "metadata":
            return _METADATA
        props = self.node.get("properties") or {}
        if name in props:
            return OpenAPISchema(props[name], self.path + (name,))
        extra = self.node.get("additionalProperties")
        if isinstance(extra, dict):
            return OpenAPISchema(extra, self.path + (name,))
        return OpenAPISchema({}, self.path + (name,))

    def item(self) -> FieldSchema:
        items = self.node.get("items")
        return OpenAPISchema(items if isinstance(items, dict) else {}, self.path + ("[]",))

    def list_spec(self) -> ListSpec:
        kind = self.node.get("x-kubernetes-list-type")
        if kind == "map":
            keys = tuple(self.node.get("x-kubernetes-list-map-keys") or ())
            if keys:
                return ListSpec(ListType.MAP, keys, keys[0])
        if kind == "set":
            return SET_LIST
        return ATOMIC_LIST

    def is_atomic(self) -> bool:
        return self.node.get("x-kubernetes-map-type") == "atomic"


#: where each built-in workload kind keeps its pod spec, by (apiVersion, kind)
POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("v1", "Pod"): ("spec",),
    ("v1", "ReplicationController"): ("spec", "template", "spec"),
    ("apps/v1", "Deployment"): ("spec", "template", "spec"),
    ("apps/v1", "StatefulSet"): ("spec", "template", "spec"),
    ("apps/v1", "DaemonSet"): ("spec", "template", "spec"),
    ("apps/v1", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch/v1", "Job"): ("spec", "template", "spec"),
    ("batch/v1", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
