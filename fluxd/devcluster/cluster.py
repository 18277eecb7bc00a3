"""The cluster's object semantics: what create, update, patch, apply and delete mean.

``Cluster`` turns a request on one resource into a stored object, with the rules a real
API server applies: conversion to the storage version, defaulting, validation, object
metadata (``uid``, ``creationTimestamp``, monotonic ``resourceVersion``, ``generation``
bumped on spec change only), optimistic concurrency, the ``status`` subresource kept
apart from the main resource, ``managedFields``, dry-run, and size limits. It knows no
HTTP: ``server.py`` maps requests onto it, and ``lifecycle.py`` reacts to what it
stores (finalizers, namespace and CRD teardown, garbage collection, workload status).
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fluxd import jsonpatch
from fluxd.clock import Clock, rfc3339
from fluxd.devcluster import apply as ssa
from fluxd.devcluster import conversion, defaults, immutable, patch, validation
from fluxd.devcluster.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
)
from fluxd.devcluster.registry import CRDError, Registry, ResourceType, StorageKey
from fluxd.devcluster.selector import FieldMatcher, labels_match
from fluxd.devcluster.store import Obj, Store
from fluxd.jsonvalue import clone
from fluxd.selector import Selector, SelectorError, from_label_selector

NAMESPACES: StorageKey = ("", "namespaces")
CRDS: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_MANAGERS = {"status": "kube-controller-manager"}

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


@dataclass(frozen=True)
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    force: bool = False
    #: Strict | Warn | Ignore — unknown-field handling for custom resources
    field_validation: str = "Strict"


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class Hooks:
    """What lifecycle.py wants to hear about; called after each stored change."""

    after_write: list[Callable[[ResourceType, Obj | None, Obj], None]] = field(
        default_factory=list)
    after_remove: list[Callable[[ResourceType, Obj], None]] = field(default_factory=list)


def manager_from_user_agent(user_agent: str) -> str:
    """The default field manager: the user agent's program name, as the real server does."""
    name = (user_agent or "unknown").split("/")[0].strip()
    return name[:128] or "unknown"


class Cluster:
    def __init__(self, *, clock: Clock, history_size: int = 10_000,
                 max_object_bytes: int = 1_572_864, seed: int | None = None) -> None:
        self.clock = clock
        self.registry = Registry(clock)
        self.store = Store(history_size=history_size)
        self.hooks = Hooks()
        self.max_object_bytes = max_object_bytes
        self._random = random.Random(seed)
        self._ip_counter = 10

    # --- reads ------------------------------------------------------------------------

    def now(self) -> str:
        return rfc3339(self.clock.now())

    def storage_type(self, rt: ResourceType) -> ResourceType:
        """The resource type objects of ``rt`` are stored as."""
        if rt.storage_of is not None:
            found = self.registry.lookup(rt.storage_of[0], "v1", rt.storage_of[1])
            assert found is not None
            return found
        if rt.storage_version and rt.storage_version != rt.version:
            found = self.registry.lookup(rt.group, rt.storage_version, rt.plural)
            if found is not None:
                return found
        return rt

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.storage, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.qualified, name, group=rt.group, kind=rt.plural)
        return conversion.to_version(obj, rt)

    def list_objects(self, rt: ResourceType, namespace: str | None, *, labels: Selector,
             fields: FieldMatcher | None, limit: int = 0, continue_token: str = "") -> ListResult:
        after = None
        rv = str(self.store.resource_version)
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                after = (str(token["start"][0]), str(token["start"][1]))
                rv = str(token["rv"])
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise bad_request(f"continue key is not valid: {exc}") from exc
        items: list[Obj] = []
        matching = (o for o in self.store.select(rt.storage, namespace, after)
                    if labels_match(labels, o) and (fields is None or fields(o)))
        result = ListResult(items, rv)
        for obj in matching:
            if limit and len(items) == limit:
                last = items[-1]["metadata"]
                start = [last.get("namespace") or "", last["name"]]
                result.continue_token = base64.urlsafe_b64encode(
                    json.dumps({"rv": int(rv), "start": start}).encode()).decode()
                result.remaining = 1 + sum(1 for _ in matching)
                break
            items.append(conversion.to_version(obj, rt))
        return result

    # --- namespace rules --------------------------------------------------------------

    def _check_namespace(self, rt: ResourceType, namespace: str, *, creating: bool) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise bad_request("the server could not find the requested resource")
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            raise not_found("namespaces", namespace, kind="namespaces")
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f"{rt.kind.lower()}s \"\" is forbidden: unable to create new content in "
                f"namespace {namespace} because it is being terminated",
                details={"name": "", "kind": rt.plural,
                         "causes": [{"reason": "NamespaceTerminating",
                                     "message": f"namespace {namespace} is being terminated",
                                     "field": "metadata.namespace"}]},
            )

    # --- the write pipeline -----------------------------------------------------------

    def _check_body(self, rt: ResourceType, body: Any, namespace: str) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not a JSON/YAML object")
        kind = body.get("kind")
        api_version = body.get("apiVersion")
        if not kind:
            raise bad_request(f"Object 'Kind' is missing in '{_short(body)}'")
        if not api_version:
            raise bad_request(f"Object 'apiVersion' is missing in '{_short(body)}'")
        if api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.api_version})")
        if kind != rt.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected "
                              f"kind ({rt.kind})")
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        body_ns = (meta or {}).get("namespace")
        if rt.namespaced and body_ns and namespace and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")
        return body

    def _name_errors(self, rt: ResourceType, meta: dict[str, Any]) -> list[tuple[str, str, str]]:
        name = meta.get("name") or ""
        if not name:
            return [("FieldValueRequired", "metadata.name",
                     "Required value: name or generateName is required")]
        if rt.storage == NAMESPACES or rt.group == "rbac.authorization.k8s.io":
            pattern, limit, what = _DNS1123_LABEL, 63, "label"
            if rt.group == "rbac.authorization.k8s.io":
                # RBAC names are path segments, not DNS names
                if "/" in name or "%" in name or name in (".", ".."):
                    return [("FieldValueInvalid", "metadata.name",
                             f'Invalid value: "{name}": may not contain "/" or "%"')]
                return []
        else:
            pattern, limit, what = _DNS1123_SUBDOMAIN, 253, "subdomain"
        if len(name) > limit or not pattern.fullmatch(name):
            example = "my-name" if what == "label" else "example.com"
            regex = pattern.pattern
            return [("FieldValueInvalid", "metadata.name",
                     f'Invalid value: "{name}": a lowercase RFC 1123 {what} must consist of '
                     f"lower case alphanumeric characters, '-'"
                     + (" or '.'" if what == "subdomain" else "")
                     + ", and must start and end with an alphanumeric character (e.g. "
                     f"'{example}', regex used for validation is '{regex}')")]
        return []

    def _prepare(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """Defaulting, pruning and validation of a would-be stored object."""
        if rt.crd and rt.openapi:
            obj = validation.prune(obj, rt.openapi)
            obj = validation.apply_defaults(obj, rt.openapi)
        else:
            obj = defaults.apply_defaults(rt.group, rt.kind, obj)
        meta = obj["metadata"]
        causes = self._name_errors(rt, meta)
        if rt.crd and rt.openapi:
            causes += [(e.type, e.field, e.message)
                       for e in validation.validate(obj, rt.openapi, old)]
        causes += self._kind_errors(rt, obj)
        if old is not None and not rt.crd:
            causes += immutable.update_errors(rt.group, rt.kind, obj, old)
        if causes:
            raise invalid(rt.qualified_kind, meta.get("name") or "", causes, group=rt.group,
                          kind=rt.kind)
        return obj

    def _kind_errors(self, rt: ResourceType, obj: Obj) -> list[tuple[str, str, str]]:
        spec = obj.get("spec") or {}
        if rt.group == "apps" and rt.kind in ("Deployment", "StatefulSet", "DaemonSet",
                                              "ReplicaSet"):
            selector = spec.get("selector")
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector:
                return [("FieldValueRequired", "spec.selector", "Required value")]
            try:
                matches = from_label_selector(selector).matches(labels)
            except SelectorError:
                matches = True  # the server's selector validation is not simulated
            if not matches:
                return [("FieldValueInvalid", "spec.template.metadata.labels",
                         f"Invalid value: {json.dumps(labels, separators=(',', ':'))}: "
                         "`selector` does not match template `labels`")]
        if rt.group == "" and rt.kind == "Pod" and not spec.get("containers"):
            return [("FieldValueRequired", "spec.containers", "Required value")]
        return []

    def _finish(self, rt: ResourceType, old: Obj | None, new: Obj, *, opts: WriteOptions,
                subresource: str, manager: str, record_fields: bool = True) -> Obj:
        """Metadata, size check, managedFields, then store (unless dry-run)."""
        storage_rt = self.storage_type(rt)
        new = conversion.to_storage(new, rt, storage_rt)
        meta = new["metadata"] = dict(new.get("metadata") or {})
        if old is None:
            meta["uid"] = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
            meta["creationTimestamp"] = self.now()
            if rt.generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(key, None)
        else:
            old_meta = old["metadata"]
            for key in ("uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if old_meta.get("deletionTimestamp") and set(meta.get("finalizers") or ()) - set(
                    old_meta.get("finalizers") or ()):
                raise invalid(rt.qualified_kind, meta["name"], [(
                    "FieldValueForbidden", "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted")],
                    group=rt.group, kind=rt.kind)
            if rt.generation and _spec_part(old, storage_rt) != _spec_part(new, storage_rt):
                meta["generation"] = int(old_meta.get("generation") or 0) + 1
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if record_fields:
            managed = ssa.record_update(
                old, new, manager=manager, schema=rt.field_schema, subresource=subresource,
                status_separate=rt.has_status, api_version=rt.api_version, now=self.now())
            if managed:
                meta["managedFields"] = managed
            else:
                meta.pop("managedFields", None)
        if old is not None and _same(old, new):
            return conversion.to_version(old, rt)  # no-op writes keep resourceVersion
        size = len(json.dumps(new, separators=(",", ":")))
        if size > self.max_object_bytes:
            raise ApiError(413, "Request entity too large: limit is "
                                f"{self.max_object_bytes}")
        if opts.dry_run:
            if old is None:
                meta.pop("resourceVersion", None)
            else:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return conversion.to_version(new, rt)
        meta["resourceVersion"] = str(self.store.next_rv())
        self.store.put(storage_rt.storage, new)
        for hook in self.hooks.after_write:
            hook(storage_rt, old, new)
        return conversion.to_version(new, rt)

    # --- create -----------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Any, *, opts: WriteOptions,
               user_agent: str = "") -> Obj:
        obj = clone(self._check_body(rt, body, namespace))
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or ""
        else:
            meta.pop("namespace", None)
        self._check_namespace(rt, meta.get("namespace") or "", creating=True)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(self._random.choice(_GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        if rt.has_status and not (rt.group == "" and rt.kind == "Namespace"):
            obj.pop("status", None)
        meta.pop("resourceVersion", None)
        obj = self._prepare(rt, obj, None)
        name = obj["metadata"]["name"]
        if self.store.get(rt.storage, obj["metadata"].get("namespace") or "", name):
            raise already_exists(rt.qualified, name, group=rt.group, kind=rt.plural)
        obj = self._allocate(rt, obj)
        obj = self._before_store(rt, None, obj)
        manager = opts.field_manager or manager_from_user_agent(user_agent)
        return self._finish(rt, None, obj, opts=opts, subresource="", manager=manager)

    def _allocate(self, rt: ResourceType, obj: Obj) -> Obj:
        if rt.group == "" and rt.kind == "Service":
            spec = obj.setdefault("spec", {})
            if spec.get("type") != "ExternalName" and not spec.get("clusterIP"):
                self._ip_counter += 1
                n = self._ip_counter
                ip = f"10.96.{n // 250 % 250}.{n % 250 + 1}"
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
        return obj

    def _before_store(self, rt: ResourceType, old: Obj | None, obj: Obj) -> Obj:
        """Kind-specific rules applied to every write (CRDs: validate names, set status)."""
        if rt.storage != CRDS:
            return obj
        try:
            types = _crd_check(self.registry, obj)
        except CRDError as exc:
            raise invalid(rt.qualified_kind, obj["metadata"].get("name", ""),
                          [("FieldValueInvalid", "spec", str(exc))], group=rt.group,
                          kind=rt.kind) from exc
        status = dict(obj.get("status") or {})
        now = self.now()
        previous = {c.get("type"): c for c in status.get("conditions") or []}
        # Established once discovery lists the kinds (the lifecycle writes it then)
        established = (previous.get("Established") or {}).get("status") == "True" or \
            self.registry.establishing_left(obj["metadata"].get("name", "")) <= 0
        conds = []
        for ctype, value, reason, message in (
            ("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            ("Established", "True" if established else "False",
             "InitialNamesAccepted" if established else "Installing",
             "the initial names have been accepted"),
        ):
            prev = previous.get(ctype) or {}
            conds.append({"type": ctype, "status": value, "reason": reason,
                          "message": message,
                          "lastTransitionTime": prev.get("lastTransitionTime")
                          if prev.get("status") == value else now})
        names = dict((obj.get("spec") or {}).get("names") or {})
        names.setdefault("singular", names.get("kind", "").lower())
        names.setdefault("listKind", names.get("kind", "") + "List")
        stored = list(status.get("storedVersions") or [])
        if types and types[0].storage_version and types[0].storage_version not in stored:
            stored.append(types[0].storage_version)
        status.update({"conditions": conds, "acceptedNames": names, "storedVersions": stored})
        obj["status"] = status
        return obj

    # --- update -----------------------------------------------------------------------

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, *,
               subresource: str, opts: WriteOptions, user_agent: str = "") -> Obj:
        incoming = clone(self._check_body(rt, body, namespace))
        meta = incoming.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                              f"name on the URL ({name})")
        meta["name"] = name
        self._check_namespace(rt, namespace, creating=False)
        old = self._live(rt, namespace, name)
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.qualified, name, group=rt.group, kind=rt.plural)
        if not want_rv and rt.crd:
            raise invalid(rt.qualified_kind, name, [(
                "FieldValueInvalid", "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update")], group=rt.group,
                kind=rt.kind)
        manager = opts.field_manager or manager_from_user_agent(user_agent)
        new = self._merge_subresource(rt, old, incoming, subresource)
        return self._write(rt, old, new, subresource=subresource, opts=opts, manager=manager)

    def _live(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        old = self.store.get(rt.storage, namespace if rt.namespaced else "", name)
        if old is None:
            raise not_found(rt.qualified, name, group=rt.group, kind=rt.plural)
        return conversion.to_version(old, rt)

    def _merge_subresource(self, rt: ResourceType, old: Obj, incoming: Obj,
                           subresource: str) -> Obj:
        """The object a write to ``subresource`` produces: the status subresource only
        changes status; the main resource never does (for kinds with a status)."""
        if subresource == "status":
            new = clone(old)
            if "status" in incoming:
                new["status"] = incoming["status"]
            else:
                new.pop("status", None)
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new
        if rt.has_status:
            if "status" in old:
                incoming["status"] = clone(old["status"])
            else:
                incoming.pop("status", None)
        return incoming

    def _write(self, rt: ResourceType, old: Obj, new: Obj, *, subresource: str,
               opts: WriteOptions, manager: str, record_fields: bool = True) -> Obj:
        """Validate and store an updated object; removes it when the last finalizer of a
        deleting object goes."""
        new.setdefault("metadata", {})
        if rt.namespaced:
            new["metadata"]["namespace"] = old["metadata"].get("namespace")
        new["metadata"]["name"] = old["metadata"]["name"]
        new = self._prepare(rt, new, old)
        new = self._before_store(rt, old, new)
        result = self._finish(rt, old, new, opts=opts, subresource=subresource,
                              manager=manager, record_fields=record_fields)
        meta = result["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not opts.dry_run:
            return self.remove(rt, result)
        return result

    # --- patch and apply --------------------------------------------------------------

    def patch(self, rt: ResourceType, namespace: str, name: str, patch_type: str, body: Any,
              *, subresource: str, opts: WriteOptions, user_agent: str = "") -> tuple[Obj, bool]:
        """Apply a patch; returns (object, created)."""
        kind = PATCH_TYPES.get(patch_type)
        if kind is None or (kind == "strategic" and rt.crd):
            accepted = ", ".join(t for t, k in PATCH_TYPES.items()
                                 if not (k == "strategic" and rt.crd))
            raise ApiError(415, f"the body of the request was in an unknown format - "
                                f"accepted media types include: {accepted}")
        self._check_namespace(rt, namespace, creating=False)
        ns = namespace if rt.namespaced else ""
        stored = self.store.get(rt.storage, ns, name)
        if kind == "apply":
            return self._apply(rt, namespace, name, body, stored, subresource=subresource,
                               opts=opts)
        if stored is None:
            raise not_found(rt.qualified, name, group=rt.group, kind=rt.plural)
        old = conversion.to_version(stored, rt)
        try:
            if kind == "merge":
                patched = jsonpatch.json_merge_patch(old, body)
            elif kind == "json":
                patched = jsonpatch.json_patch(old, body)
            else:
                if not isinstance(body, dict):
                    raise jsonpatch.PatchError("strategic merge patch must be an object")
                patched = patch.strategic_merge_patch(old, body, rt.field_schema)
        except jsonpatch.PatchError as exc:
            raise ApiError(422 if kind == "json" else 400, str(exc)) from exc
        if not isinstance(patched, dict):
            raise bad_request("the patch did not produce an object")
        patched.setdefault("apiVersion", rt.api_version)
        patched.setdefault("kind", rt.kind)
        self._check_body(rt, patched, namespace)
        want_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.qualified, name, group=rt.group, kind=rt.plural)
        manager = opts.field_manager or manager_from_user_agent(user_agent)
        new = self._merge_subresource(rt, old, patched, subresource)
        return self._write(rt, old, new, subresource=subresource, opts=opts,
                           manager=manager), False

    def _apply(self, rt: ResourceType, namespace: str, name: str, body: Any,
               stored: Obj | None, *, subresource: str, opts: WriteOptions) -> tuple[Obj, bool]:
        if not opts.field_manager:
            raise bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                              "Required value: is required for apply patch")
        config = self._check_body(rt, body, namespace)
        meta = config.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the "
                              f"name on the URL ({name})")
        if meta.get("managedFields"):
            raise bad_request("metadata.managedFields must be nil")
        want_rv = meta.get("resourceVersion")
        if stored is None:
            if subresource:
                raise not_found(rt.qualified, name, group=rt.group, kind=rt.plural)
            if want_rv:
                raise conflict(rt.qualified, name, group=rt.group, kind=rt.plural)
            live: Obj = {"apiVersion": rt.api_version, "kind": rt.kind,
                         "metadata": {"name": name}}
        else:
            live = conversion.to_version(stored, rt)
            if want_rv and want_rv != live["metadata"]["resourceVersion"]:
                raise conflict(rt.qualified, name, group=rt.group, kind=rt.plural)
        try:
            merged = ssa.apply(
                live, config, manager=opts.field_manager, force=opts.force,
                schema=rt.field_schema, subresource=subresource, status_separate=rt.has_status,
                api_version=rt.api_version, now=self.now())
        except ssa.TypedPatchError as exc:
            # named as the request body names it; an unclassified error: 500, no reason
            subject = (f"{meta.get('namespace') or ''}/{meta.get('name') or ''}; "
                       f"{rt.group}/{rt.version}, Kind={rt.kind}")
            raise ApiError(500, f"failed to create typed patch object ({subject}): {exc}",
                           reason="") from exc
        except ssa.ConflictError as exc:
            raise ApiError(409, str(exc), details={"causes": [
                {"reason": "FieldManagerConflict",
                 "message": f"conflict with {c.owner_text}",
                 "field": ssa.path_text(c.path)} for c in exc.conflicts]}) from exc
        except ssa.ApplyError as exc:
            raise invalid(rt.qualified_kind, name, [("FieldValueInvalid", "", str(exc))],
                          group=rt.group, kind=rt.kind) from exc
        merged["apiVersion"] = rt.api_version
        merged["kind"] = rt.kind
        merged["metadata"]["name"] = name
        if stored is None:
            merged["metadata"].pop("resourceVersion", None)
            if rt.namespaced:
                merged["metadata"]["namespace"] = namespace
            self._check_namespace(rt, namespace, creating=True)
            if rt.has_status:
                merged.pop("status", None)
            obj = self._prepare(rt, merged, None)
            obj = self._allocate(rt, obj)
            obj = self._before_store(rt, None, obj)
            return self._finish(rt, None, obj, opts=opts, subresource="",
                                manager=opts.field_manager, record_fields=False), True
        if subresource != "status" and rt.has_status:
            if "status" in live:
                merged["status"] = live["status"]
            else:
                merged.pop("status", None)
        return self._write(rt, live, merged, subresource=subresource, opts=opts,
                           manager=opts.field_manager, record_fields=False), False

    # --- scale subresource ------------------------------------------------------------

    def get_scale(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        if rt.scale is None:
            raise not_found(rt.qualified, name, group=rt.group, kind=rt.plural)
        obj = self.get(rt, namespace, name)
        return _scale_of(rt, obj)

    def update_scale(self, rt: ResourceType, namespace: str, name: str, scale: Any, *,
                     opts: WriteOptions, user_agent: str, patch_type: str | None = None
                     ) -> Obj:
        current = self.get_scale(rt, namespace, name)
        if patch_type is not None:
            kind = PATCH_TYPES.get(patch_type)
            try:
                if kind == "merge" or kind == "strategic":
                    scale = jsonpatch.json_merge_patch(current, scale)
                elif kind == "json":
                    scale = jsonpatch.json_patch(current, scale)
                else:
                    raise ApiError(415, "the body of the request was in an unknown format")
            except jsonpatch.PatchError as exc:
                raise ApiError(422, str(exc)) from exc
        if not isinstance(scale, dict):
            raise bad_request("the body of the request was not an object")
        want_rv = (scale.get("metadata") or {}).get("resourceVersion")
        if want_rv and want_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.qualified, name, group=rt.group, kind=rt.plural)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale.autoscaling", name, [(
                "FieldValueInvalid", "spec.replicas",
                f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0")])
        assert rt.scale is not None
        old = self._live(rt, namespace, name)
        new = clone(old)
        _set_path(new, rt.scale.spec_replicas, replicas)
        manager = opts.field_manager or manager_from_user_agent(user_agent)
        result = self._write(rt, old, new, subresource="scale", opts=opts, manager=manager)
        return _scale_of(rt, result)

    # --- delete -----------------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str, name: str, *, propagation: str = "",
               preconditions: dict[str, Any] | None = None, dry_run: bool = False) -> Obj:
        old = self._live(rt, namespace, name)
        meta = old["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                f"UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise ApiError(409, "Precondition failed: ResourceVersion in precondition: "
                                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                f"{meta['resourceVersion']}")
        if propagation and propagation not in ("Background", "Foreground", "Orphan"):
            raise invalid("DeleteOptions.meta.k8s.io", "", [(
                "FieldValueNotSupported", "propagationPolicy",
                f'Unsupported value: "{propagation}": supported values: "Foreground", '
                '"Background", "Orphan", "nil"')])
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if propagation == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if rt.storage == NAMESPACES and "kubernetes" in ((old.get("spec") or {}).get(
                "finalizers") or []):
            new = clone(old)
            new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
        elif rt.storage == CRDS:
            new = clone(old)
            if "customresourcecleanup.apiextensions.k8s.io" not in finalizers:
                finalizers.append("customresourcecleanup.apiextensions.k8s.io")
        elif finalizers:
            new = clone(old)
        else:
            if dry_run:
                return old
            return self.remove(rt, old)
        if meta.get("deletionTimestamp") and finalizers == list(meta.get("finalizers") or []):
            return old  # already terminating: nothing changes
        new["metadata"]["finalizers"] = finalizers
        new["metadata"].setdefault("deletionTimestamp", self.now())
        new["metadata"].setdefault("deletionGracePeriodSeconds", 0)
        storage_rt = self.storage_type(rt)
        new = conversion.to_storage(new, rt, storage_rt)
        if dry_run:
            return conversion.to_version(new, rt)
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(storage_rt.storage, new)
        for hook in self.hooks.after_write:
            hook(storage_rt, old, new)
        return conversion.to_version(new, rt)

    def remove(self, rt: ResourceType, obj: Obj) -> Obj:
        """Remove an object for good (no finalizers left)."""
        storage_rt = self.storage_type(rt)
        final = conversion.to_storage(clone(obj), rt, storage_rt)
        final["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.remove(storage_rt.storage, final)
        for hook in self.hooks.after_remove:
            hook(storage_rt, final)
        return conversion.to_version(final, rt)

    # --- system writes used by lifecycle.py -------------------------------------------

    def system_update(self, rt: ResourceType, obj: Obj, *, subresource: str = "",
                      manager: str = "") -> Obj:
        """A write by a built-in controller (no resourceVersion precondition)."""
        old = self.store.get(rt.storage, obj["metadata"].get("namespace") or "",
                             obj["metadata"]["name"])
        if old is None:
            return obj
        old = conversion.to_version(old, rt)
        new = self._merge_subresource(rt, old, clone(obj), subresource)
        return self._write(rt, old, new, subresource=subresource, opts=WriteOptions(),
                           manager=manager or _SYSTEM_MANAGERS.get(subresource,
                                                                   "kube-controller-manager"))


def _crd_check(registry: Registry, crd: Obj) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = (crd.get("metadata") or {}).get("name") or ""
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    if name != expected:
        raise CRDError(f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."'
                       f"+spec.group")
    from fluxd.devcluster.registry import types_from_crd

    types = types_from_crd(crd)
    if not types:
        raise CRDError("spec.versions: Invalid value: must have at least one served version")
    storage = [v for v in spec.get("versions") or [] if v.get("storage")]
    if len(storage) != 1:
        raise CRDError("spec.versions: Invalid value: must have exactly one version marked as "
                       "storage version")
    for rt in types:
        existing = registry.lookup(rt.group, rt.version, rt.plural)
        if existing is not None and existing.crd != name:
            raise CRDError(f"{rt.plural}.{rt.group}/{rt.version} is already served")
    return types


def _spec_part(obj: Obj, rt: ResourceType) -> dict[str, Any]:
    """What a change of bumps ``metadata.generation``."""
    skip = {"metadata", "apiVersion", "kind"}
    if rt.has_status:
        skip.add("status")
    part = {k: v for k, v in obj.items() if k not in skip}
    if (rt.group, rt.kind) == ("apps", "Deployment"):
        # the real Deployment strategy counts annotations too: the deployment controller
        # copies them to the ReplicaSets, so a new generation tells it to do so
        part["metadata.annotations"] = (obj.get("metadata") or {}).get("annotations") or {}
    return part


def _same(old: Obj, new: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        out = dict(o)
        meta = dict(out.get("metadata") or {})
        meta.pop("resourceVersion", None)
        for entry in meta.get("managedFields") or []:
            entry.get("time")
        meta["managedFields"] = [{k: v for k, v in e.items() if k != "time"}
                                 for e in meta.get("managedFields") or []]
        out["metadata"] = meta
        return out

    return strip(old) == strip(new)


def _scale_of(rt: ResourceType, obj: Obj) -> Obj:
    assert rt.scale is not None
    meta = obj["metadata"]
    status: dict[str, Any] = {"replicas": _get_path(obj, rt.scale.status_replicas) or 0}
    if rt.scale.label_selector:
        selector = _get_path(obj, rt.scale.label_selector)
        if selector is not None:
            status["selector"] = selector
    if rt.group == "apps":
        try:
            status["selector"] = str(from_label_selector((obj.get("spec") or {}).get("selector")))
        except SelectorError:
            status["selector"] = ""
    return {
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": _get_path(obj, rt.scale.spec_replicas) or 0},
        "status": status,
    }


def _get_path(obj: Any, path: str) -> Any:
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _set_path(obj: Obj, path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def _short(body: Obj) -> str:
    text = json.dumps(body, separators=(",", ":"))
    return text if len(text) < 200 else text[:200] + "..."


_ = string  # keep the import used where generateName alphabets are documented
