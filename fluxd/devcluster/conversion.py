"""Converting stored objects between the versions a resource is served at.

Objects are stored in their storage version. Custom resources convert with the CRD
``None`` strategy (only ``apiVersion`` changes), as Flux's CRDs do. ``Event`` is stored as
``v1`` and also served as ``events.k8s.io/v1``, whose fields are renamed.
"""

from __future__ import annotations

from typing import Any

from fluxd.devcluster.registry import ResourceType

Obj = dict[str, Any]

# core/v1 field -> events.k8s.io/v1 field
_EVENT_FIELDS = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
_EVENT_FIELDS_BACK = {v: k for k, v in _EVENT_FIELDS.items()}


def to_version(obj: Obj, target: ResourceType) -> Obj:
    """A stored object as seen through ``target``'s group/version."""
    if obj.get("apiVersion") == target.api_version:
        return obj
    if target.storage_of == ("", "events"):
        return _rename(obj, _EVENT_FIELDS, target.api_version)
    out = dict(obj)
    out["apiVersion"] = target.api_version
    return out


def to_storage(obj: Obj, source: ResourceType, storage: ResourceType) -> Obj:
    """An object sent to ``source``'s endpoint, in ``storage``'s version."""
    if source.storage_of == ("", "events"):
        return _rename(obj, _EVENT_FIELDS_BACK, storage.api_version)
    if obj.get("apiVersion") == storage.api_version:
        return obj
    out = dict(obj)
    out["apiVersion"] = storage.api_version
    return out


def _rename(obj: Obj, names: dict[str, str], api_version: str) -> Obj:
    out: Obj = {}
    for key, value in obj.items():
        out[names.get(key, key)] = value
    out["apiVersion"] = api_version
    return out
