"""Discovery documents: what clients read to learn which resources exist and how.

Both discovery styles are served: the legacy one (``/api``, ``/apis``, one
``APIResourceList`` per group version) and aggregated discovery
(``apidiscovery.k8s.io/v2``, one document for all groups), which kubectl and client-go
ask for first. OpenAPI v3 documents describe, per group version, the PATCH operations
with the query parameters the server supports (``fieldValidation``, ``dryRun``,
``fieldManager``, ``force``) — that is how kubectl decides to leave field validation to
the server — and carry a CRD's schema for ``kubectl explain``. OpenAPI v2 is not served;
clients fall back to their compiled-in knowledge of the built-in kinds, as they do with
any server that lacks it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fluxd.devcluster.registry import DiscoveryView, ResourceType

KUBERNETES_VERSION = {"major": "1", "minor": "35"}
GIT_VERSION = "v1.35.0+fluxd.dev"

_SUBRESOURCE_VERBS = ["get", "patch", "update"]


def version_info(build_date: str) -> dict[str, Any]:
    return {
        **KUBERNETES_VERSION,
        "emulationMajor": KUBERNETES_VERSION["major"],
        "emulationMinor": KUBERNETES_VERSION["minor"],
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "34",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": build_date,
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _storage_hash(rt: ResourceType) -> str:
    text = f"{rt.group}/{rt.storage_version or rt.version}/{rt.kind}"
    return hashlib.sha256(text.encode()).digest()[:8].hex()


def _sub_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    if sub == "scale":
        return ("autoscaling", "v1", "Scale")
    return (rt.group, rt.version, rt.kind)


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: DiscoveryView) -> dict[str, Any]:
    groups = [_group_entry(g, vs) for g, vs in registry.groups() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: DiscoveryView, group: str) -> dict[str, Any] | None:
    for g, versions in registry.groups():
        if g == group and g:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(g, versions)}
    return None


def resource_list(registry: DiscoveryView, group: str, version: str) -> dict[str, Any] | None:
    types = [rt for rt in registry if rt.group == group and rt.version == version]
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for rt in sorted(types, key=lambda r: r.plural):
        entry: dict[str, Any] = {
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        if not rt.virtual:
            entry["storageVersionHash"] = _storage_hash(rt)
        resources.append(entry)
        for sub in sorted(rt.subresources):
            g, v, k = _sub_kind(rt, sub)
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                "kind": k, "verbs": ["update"] if sub == "finalize" else _SUBRESOURCE_VERBS,
            }
            if sub == "scale":
                sub_entry.update(group=g, version=v)
            resources.append(sub_entry)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    subs = []
    for sub in sorted(rt.subresources):
        g, v, k = _sub_kind(rt, sub)
        subs.append({"subresource": sub,
                     "responseKind": {"group": g, "version": v, "kind": k},
                     "verbs": ["update"] if sub == "finalize" else _SUBRESOURCE_VERBS})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(registry: DiscoveryView, *, legacy: bool, api_version: str) -> dict[str, Any]:
    """``APIGroupDiscoveryList`` for ``/api`` (legacy=True) or ``/apis``."""
    items = []
    for group, versions in registry.groups():
        if (group == "") != legacy:
            continue
        out_versions = []
        for version in versions:
            types = sorted((rt for rt in registry if rt.group == group and rt.version == version),
                           key=lambda r: r.plural)
            out_versions.append({"version": version, "freshness": "Current",
                                 "resources": [_aggregated_resource(rt) for rt in types]})
        items.append({"metadata": {"name": group} if group else {}, "versions": out_versions})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {},
            "items": items}


# --- OpenAPI v3 -------------------------------------------------------------------------

def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_index(registry: DiscoveryView) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.groups():
        for version in versions:
            key = _gv_path(group, version)
            doc = openapi_document(registry, group, version)
            digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64]
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest.upper()}"}
    return {"paths": paths}


def _schema_name(rt: ResourceType) -> str:
    group = rt.group or "core"
    return f"io.fluxd.dev.{group}.{rt.version}.{rt.kind}"


_PATCH_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": True,
     "description": desc}
    for name, desc in (
        ("dryRun", "When present, the change is computed and returned but not stored."),
        ("fieldManager", "The name of the actor making the change."),
        ("fieldValidation", "How unknown or duplicate fields are handled: Ignore, Warn or "
                            "Strict."),
        ("force", "Apply only: take over fields owned by other managers."),
    )
]


def openapi_document(registry: DiscoveryView, group: str, version: str) -> dict[str, Any] | None:
    types = [rt for rt in registry if rt.group == group and rt.version == version]
    if not types:
        return None
    gv_prefix = "/" + _gv_path(group, version)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        name = _schema_name(rt)
        schema: dict[str, Any] = dict(rt.openapi) if rt.openapi else {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = schema
        if rt.virtual:
            continue
        ref = {"$ref": f"#/components/schemas/{name}"}
        item = (f"{gv_prefix}/namespaces/{{namespace}}/{rt.plural}/{{name}}" if rt.namespaced
                else f"{gv_prefix}/{rt.plural}/{{name}}")
        media = ("application/apply-patch+yaml", "application/json-patch+json",
                 "application/merge-patch+json")
        paths[item] = {
            "get": {"operationId": f"read{rt.kind}", "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk,
                    "responses": {"200": {"content": {"application/json": {"schema": ref}}}}},
            "patch": {
                "operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": _PATCH_PARAMS,
                "requestBody": {"content": {m: {"schema": {"type": "object"}} for m in media},
                                "required": True},
                "responses": {"200": {"content": {"application/json": {"schema": ref}}}},
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (fluxd development server)", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }
