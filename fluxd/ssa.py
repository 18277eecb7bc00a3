"""Server-side apply of sets of objects, their pruning and their drift, the way Flux's
``fluxcd/pkg/ssa`` resource manager (and its ``jsondiff``) does it. Shared by the
Kustomization controller (apply, prune) and the HelmRelease controller (drift detection
and correction); the ``kustomize.toolkit.fluxcd.io/*`` annotations below are the
vocabulary Flux's resource manager is configured with for Kustomizations.

Contract:

- ``ResourceManager.apply_all_staged(objects)`` applies in Flux's stages: (1) CRDs,
  Namespaces and ClusterRoles, then a wait until the CRDs are Established and the rest
  exist; (2) kinds named ``*Class``, then a wait until they exist; (3) everything else,
  at most ``concurrency`` writes in flight. Every object gets the owner labels. The
  result is a ``ChangeSet``: created, configured, unchanged or skipped per object.
- Nothing is written before the whole set has been dry-run. An object the server
  rejects raises ``ApplyError`` naming it, and nothing of the set is applied. Objects
  the server cannot judge yet — custom resources whose CRD is in the same set and not
  yet served, objects in a Namespace the set creates — are dry-run after stage 1,
  before anything of stages 2 and 3 is written. An object recreated for an immutable
  field (force) can only be checked once the old one is gone.
- An object without drift, and without managed-fields cleanup to do, is not written:
  its ``resourceVersion`` stays.
- ``delete_all`` prunes and returns its failures rather than raising them, so the
  caller can keep those objects in its inventory; ``wait_for_termination`` waits for
  deleted objects to be gone.
- ``object_diff(live, dry)`` is Flux's ``jsondiff`` of one object: the RFC 6902
  operations that turn the live object into its dry-run (labels and annotations added
  or changed, everything outside metadata and status); ``mask_secret_patch`` hides a
  Secret's values in such operations.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from fluxd import jsonpointer, regex
from fluxd.clock import Clock
from fluxd.kube.errors import Conflict, Invalid, KubeError, NotFound
from fluxd.kube.mapping import Mapping as RESTMapping
from fluxd.schema import POD_SPEC_PATHS
from fluxd.selector import Selector
from fluxd.selector import parse as parse_selector

Obj = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")

GROUP = "kustomize.toolkit.fluxcd.io"
RECONCILE_KEY = f"{GROUP}/reconcile"
SSA_KEY = f"{GROUP}/ssa"
FORCE_KEY = f"{GROUP}/force"
PRUNE_KEY = f"{GROUP}/prune"
DISABLED = "disabled"
ENABLED = "Enabled"
SSA_IGNORE = "Ignore"
SSA_IF_NOT_PRESENT = "IfNotPresent"
SSA_MERGE = "Merge"

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: metadata that earlier tools (kubectl, Flux v1, early kustomize-controller) left behind
CLEANUP_ANNOTATIONS = (LAST_APPLIED, f"{GROUP}/checksum", "fluxcd.io/sync-checksum")
CLEANUP_LABELS = ("fluxcd.io/sync-gc-mark",)

RBAC_GROUP = "rbac.authorization.k8s.io"
_RBAC_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})
JSON_PATCH = "application/json-patch+json"

#: apply order inside a stage (as kustomize/Helm order kinds); prune runs it backwards
_KIND_ORDER_FIRST = (
    "CustomResourceDefinition", "Namespace", "ResourceQuota", "StorageClass",
    "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
    "ClusterRoleBinding", "ConfigMap", "Secret", "Service", "LimitRange", "PriorityClass",
    "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
)
_KIND_ORDER_LAST = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
_KIND_RANK = {**{k: i - len(_KIND_ORDER_FIRST) for i, k in enumerate(_KIND_ORDER_FIRST)},
              **{k: i + 1 for i, k in enumerate(_KIND_ORDER_LAST)}}

#: server messages that mean "recreate to change this" beyond 409/422 (admission, CEL)
_IMMUTABLE_MESSAGE = re.compile(r"is\simmutable|immutable\sfield")


class KubeAPI(Protocol):
    """What the resource manager needs of ``fluxd.kube.KubeClient``."""

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj: ...

    async def apply(self, obj: Obj, *, force: bool = ..., dry_run: bool = ...,
                    field_manager: str | None = ..., subresource: str | None = ...) -> Obj: ...

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *, propagation: str = ...,
                     dry_run: bool = ..., preconditions: dict[str, str] | None = ...
                     ) -> Obj: ...

    async def request(self, method: str, path: str, *,
                      query: list[tuple[str, str]] | None = ..., body: Any = ...,
                      content_type: str = ..., accept: str = ...) -> Any: ...

    async def mapping(self, api_version: str, kind: str) -> RESTMapping: ...

    async def refresh_mapping(self) -> None: ...


# --- identities, change sets -----------------------------------------------------------

@dataclass(frozen=True)
class ObjMeta:
    """An object's identity in an inventory: group and kind (never the version),
    namespace ("" for cluster-scoped objects) and name."""

    group: str
    kind: str
    namespace: str
    name: str

    @property
    def id(self) -> str:
        """cli-utils' inventory id, ``<namespace>_<name>_<group>_<kind>``; a ``:`` in an
        RBAC object's name is written ``__``."""
        name = self.name
        if self.group == RBAC_GROUP and self.kind in _RBAC_KINDS:
            name = name.replace(":", "__")
        return f"{self.namespace}_{name}_{self.group}_{self.kind}"

    @classmethod
    def parse_id(cls, text: str) -> ObjMeta:
        """The identity an inventory id stands for (ValueError when malformed)."""
        namespace, sep, rest = text.partition("_")
        if not sep:
            raise ValueError(f"unable to parse stored object metadata: {text}")
        rest, sep, kind = rest.rpartition("_")
        if not sep:
            raise ValueError(f"unable to parse stored object metadata: {text}")
        name, sep, group = rest.rpartition("_")
        if not sep:
            raise ValueError(f"unable to parse stored object metadata: {text}")
        name = name.replace("__", ":")
        if "_" in name:
            raise ValueError(f"too many fields within: {rest}")
        if not name:
            raise ValueError("empty name for object")
        if not kind:
            raise ValueError("empty kind for object")
        return cls(group, kind, namespace, name)

    @classmethod
    def of(cls, obj: Mapping[str, Any], *, namespaced: bool = True) -> ObjMeta:
        meta = obj.get("metadata") or {}
        return cls(_group_of(str(obj.get("apiVersion") or "")), str(obj.get("kind") or ""),
                   str(meta.get("namespace") or "") if namespaced else "",
                   str(meta.get("name") or ""))

    @property
    def subject(self) -> str:
        """How Flux names the object in messages: ``Kind/namespace/name``, or
        ``Kind/name`` when cluster-scoped."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


class Action(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"


_CHANGES = frozenset({Action.CREATED, Action.CONFIGURED, Action.DELETED})


@dataclass(frozen=True)
class ChangeSetEntry:
    meta: ObjMeta
    #: the API version without its group (``v1`` for ``apps/v1``), as inventories hold it
    version: str
    action: Action
    #: the object as the server last showed it (the apply's answer, or the live object
    #: when nothing was written); None when unknown. Lets a health check start without
    #: reading every object again.
    object: Obj | None = field(default=None, compare=False, repr=False)

    @property
    def subject(self) -> str:
        return self.meta.subject

    def __str__(self) -> str:
        return f"{self.subject} {self.action}"


@dataclass
class ChangeSet:
    entries: list[ChangeSetEntry] = field(default_factory=list)

    def __iter__(self) -> Iterator[ChangeSetEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.entries)

    def extend(self, entries: Iterable[ChangeSetEntry]) -> None:
        self.entries.extend(entries)

    def changed(self) -> list[ChangeSetEntry]:
        """The entries that changed the cluster: created, configured or deleted."""
        return [e for e in self.entries if e.action in _CHANGES]

    def has_changes(self) -> bool:
        return any(e.action in _CHANGES for e in self.entries)

    def event_lines(self) -> str:
        """Flux's event text: one ``<Kind>/<ns>/<name> <action>`` line per change."""
        return "\n".join(str(e) for e in self.changed())

    def to_map(self) -> dict[str, str]:
        return {e.subject: str(e.action) for e in self.entries}

    def inventory(self) -> list[dict[str, str]]:
        """Inventory entries ``{id, v}``, one per object, in change-set order."""
        return [{"id": e.meta.id, "v": e.version} for e in self.entries]


# --- errors ------------------------------------------------------------------------------

class ResourceError(Exception):
    """An object could not be applied, deleted or waited for; the message names it."""

    def __init__(self, message: str, *, meta: ObjMeta | None = None,
                 cause: KubeError | None = None) -> None:
        super().__init__(message)
        self.meta = meta
        self.cause = cause


class ApplyError(ResourceError):
    """The apply of a set failed; nothing after the failing step was written."""


class DeleteError(ResourceError):
    """One object could not be pruned (returned by ``delete_all``, not raised)."""


class WaitError(ApplyError, TimeoutError):
    """Objects did not become ready (a staged apply) or go away (termination) in time."""


def _dry_run_error(meta: ObjMeta, exc: KubeError) -> ApplyError:
    if isinstance(exc, NotFound) and exc.reason != "NoKindMatch":
        if not meta.namespace:
            text = f"{meta.subject} namespace not specified: {exc.message}"
        else:
            text = f"{meta.subject} not found: {exc.message}"
        return ApplyError(text, meta=meta, cause=exc)
    reason = "" if exc.reason == "NoKindMatch" else exc.reason
    causes = exc.details.get("causes") if isinstance(exc.details, dict) else None
    if any(isinstance(c, dict) and c.get("reason") == "FieldManagerConflict"
           for c in causes or []):
        reason = "FieldManagerConflict"
    shown = f" ({reason})" if reason else ""
    return ApplyError(f"{meta.subject} dry-run failed{shown}: {exc.message}", meta=meta,
                      cause=exc)


# --- drift ignore rules ------------------------------------------------------------------

_TARGET_FIELDS = ("group", "version", "kind", "name", "namespace")


@dataclass(frozen=True)
class IgnoreRule:
    """A Kustomization's drift-ignore rule: JSON pointers (RFC 6901) left alone in the
    objects the target selects (every object without one). The target has Flux's
    selector fields: ``group``, ``version``, ``kind``, ``name``, ``namespace`` (regular
    expressions matched whole) and ``labelSelector``, ``annotationSelector``."""

    paths: tuple[str, ...]
    target: Mapping[str, str] | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> IgnoreRule:
        target = spec.get("target")
        return cls(tuple(str(p) for p in spec.get("paths") or ()),
                   {str(k): str(v) for k, v in target.items() if v is not None}
                   if isinstance(target, Mapping) else None)

    def _field(self, *names: str) -> str:
        for name in names:
            value = (self.target or {}).get(name)
            if value:
                return value
        return ""

    @functools.cached_property
    def _patterns(self) -> dict[str, regex.Regex]:
        """The target's regular expressions, anchored as Flux anchors them
        (``^(?:…)$``, Go syntax, RE2); RegexError when one does not compile."""
        return {name: regex.compile(f"^(?:{pattern})$")
                for name in _TARGET_FIELDS if (pattern := self._field(name))}

    @functools.cached_property
    def _selectors(self) -> tuple[Selector, Selector]:
        """The label and annotation selectors (Kubernetes' syntax, as Flux parses both);
        SelectorError when one does not parse."""
        return (parse_selector(self._field("labelSelector", "label_selector")),
                parse_selector(self._field("annotationSelector", "annotation_selector")))

    @functools.cached_property
    def tokens(self) -> tuple[list[str], ...]:
        """The paths' reference tokens; PointerError when one is malformed."""
        return tuple(jsonpointer.parse(path) for path in self.paths)

    def check(self) -> None:
        """ValueError when a pattern, selector or path is malformed."""
        self._patterns  # noqa: B018 - compiling is the check
        self._selectors  # noqa: B018 - parsing is the check
        for path in self.paths:
            try:
                jsonpointer.parse(path)
            except jsonpointer.PointerError as exc:
                raise ValueError(f"invalid JSON pointer {path!r}: {exc}") from None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        api_version = str(obj.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        values = {"group": group, "version": version, "kind": str(obj.get("kind") or ""),
                  "name": str(meta.get("name") or ""),
                  "namespace": str(meta.get("namespace") or "")}
        for name, pattern in self._patterns.items():
            if not pattern.search(values[name]):
                return False
        labels, annotations = self._selectors
        return labels.matches(meta.get("labels")) and \
            annotations.matches(meta.get("annotations"))


def ignored_paths(rules: Sequence[IgnoreRule], obj: Mapping[str, Any]) -> list[list[str]]:
    out: list[list[str]] = []
    for rule in rules:
        if rule.matches(obj):
            out.extend(rule.tokens)
    return out


# --- JSON pointers (fluxd.jsonpointer), looked up leniently: a missing path is no error --

def _index(array: list[Any], token: str) -> int | None:
    """``token`` as an index of an element of ``array``, or None."""
    index = jsonpointer.array_index(token)
    return index if index is not None and index < len(array) else None


def _step(value: Any, token: str) -> tuple[bool, Any]:
    if isinstance(value, dict):
        return (token in value), value.get(token)
    if isinstance(value, list) and (index := _index(value, token)) is not None:
        return True, value[index]
    return False, None


def _lookup(doc: Any, tokens: Sequence[str]) -> tuple[bool, Any]:
    value = doc
    for token in tokens:
        found, value = _step(value, token)
        if not found:
            return False, None
    return True, value


def remove_path(doc: Any, tokens: Sequence[str]) -> None:
    if not tokens:
        return
    found, parent = _lookup(doc, tokens[:-1])
    last = tokens[-1]
    if found and isinstance(parent, dict):
        parent.pop(last, None)
    elif found and isinstance(parent, list) and (index := _index(parent, last)) is not None:
        del parent[index]


def _set(doc: Any, tokens: Sequence[str], value: Any) -> None:
    if not tokens:
        return
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            child = node.get(token)
            if not isinstance(child, (dict, list)):
                child = node[token] = {}
            node = child
        elif isinstance(node, list) and (index := _index(node, token)) is not None:
            node = node[index]
        else:
            return
    last = tokens[-1]
    if isinstance(node, dict):
        node[last] = value
    elif isinstance(node, list) and (index := _index(node, last)) is not None:
        node[index] = value


# --- metadata helpers --------------------------------------------------------------------

def _group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _version_of(api_version: str) -> str:
    return api_version.rpartition("/")[2]


def any_in_metadata(obj: Mapping[str, Any] | None, wanted: Mapping[str, str]) -> bool:
    """Whether a label or annotation has one of the wanted values (case-insensitive),
    as Flux's ``AnyInMetadata``."""
    if not obj:
        return False
    meta = obj.get("metadata") or {}
    found = [meta.get("labels") or {}, meta.get("annotations") or {}]
    for key, value in wanted.items():
        for source in found:
            have = source.get(key)
            if have and str(have).casefold() == value.casefold():
                return True
    return False


def sort_key(meta: ObjMeta) -> tuple[int, str, str, str, str]:
    """Flux's apply order: known kinds first (CRDs, Namespaces, …), webhooks last."""
    return (_KIND_RANK.get(meta.kind, 0), meta.group, meta.kind, meta.namespace, meta.name)


def stage_of(obj: Mapping[str, Any]) -> int:
    """0: cluster definitions (CRDs, Namespaces, ClusterRoles); 1: ``*Class`` kinds;
    2: everything else."""
    kind = str(obj.get("kind") or "")
    api_version = str(obj.get("apiVersion") or "")
    lowered = kind.lower()
    if _is_crd(obj) or (lowered == "namespace" and api_version == "v1") or (
            lowered == "clusterrole" and api_version.startswith(f"{RBAC_GROUP}/")):
        return 0
    if kind.endswith("Class"):
        return 1
    return 2


def _is_crd(obj: Mapping[str, Any]) -> bool:
    return (str(obj.get("kind") or "").lower() == "customresourcedefinition"
            and str(obj.get("apiVersion") or "").startswith("apiextensions.k8s.io/"))


def normalize(obj: Mapping[str, Any]) -> Obj:
    """A copy of ``obj`` with what the server would add or move anyway made explicit, so
    dry-run and live agree (Flux's ``normalize.Unstructured``): container and Service
    ports get protocol TCP, a Secret's ``stringData`` moves into ``data``, and
    ``status`` (kept for CRDs) and ``metadata.creationTimestamp`` go; a CRD's conversion
    webhook caBundle without a certificate goes too."""
    out: Obj = copy.deepcopy(dict(obj))
    key = (str(out.get("apiVersion") or ""), str(out.get("kind") or ""))
    pod_path = POD_SPEC_PATHS.get(key)
    if pod_path is not None:
        found, pod = _lookup(out, pod_path)
        if found and isinstance(pod, dict):
            for container in pod.get("containers") or []:
                for port in (container.get("ports") or []) if isinstance(container, dict) else []:
                    if isinstance(port, dict) and not port.get("protocol"):
                        port["protocol"] = "TCP"
    elif key == ("v1", "Service"):
        for port in (out.get("spec") or {}).get("ports") or []:
            if isinstance(port, dict) and not port.get("protocol"):
                port["protocol"] = "TCP"
    elif key == ("v1", "Secret") and isinstance(out.get("stringData"), dict):
        data = dict(out.get("data") or {})
        for name, value in out.pop("stringData").items():
            data[name] = base64.b64encode(str(value).encode()).decode()
        out["data"] = data
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("creationTimestamp", None)
    if not _is_crd(out):
        out.pop("status", None)
    else:
        _drop_invalid_ca_bundle(out)
    return out


def _drop_invalid_ca_bundle(crd: Obj) -> None:
    """A conversion webhook caBundle that holds no PEM certificate is left out, as Flux
    does: newer API servers reject it, and an injector usually fills it in."""
    found, config = _lookup(crd, ("spec", "conversion", "webhook", "clientConfig"))
    bundle = config.get("caBundle") if found and isinstance(config, dict) else None
    if not bundle:
        return
    try:
        pem = base64.b64decode(str(bundle), validate=True)
    except ValueError:
        pem = b""
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        config.pop("caBundle", None)


def _without_noise(obj: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def has_drifted(live: Mapping[str, Any] | None, dry: Mapping[str, Any],
                ignore: Sequence[Sequence[str]] = ()) -> bool:
    """Whether the dry-run result differs from the live object in labels, annotations
    or anything outside metadata and status, the ``ignore`` paths left out."""
    if live is None or not (dry.get("metadata") or {}).get("resourceVersion"):
        return True
    a, b = dict(live), dict(dry)
    if ignore:
        a, b = copy.deepcopy(a), copy.deepcopy(b)
        for tokens in ignore:
            remove_path(a, tokens)
            remove_path(b, tokens)
    meta_a, meta_b = a.get("metadata") or {}, b.get("metadata") or {}
    for name in ("labels", "annotations"):
        if (meta_a.get(name) or {}) != (meta_b.get(name) or {}):
            return True
    return _without_noise(a) != _without_noise(b)


# --- JSON diff (Flux's ssa/jsondiff) -------------------------------------------------------

#: nesting deeper than this is compared as one value (bounds the recursion)
_MAX_DIFF_DEPTH = 64
SECRET_MASK = "***"
SECRET_MASK_BEFORE = "*** (before)"
SECRET_MASK_AFTER = "*** (after)"


def compare(a: Any, b: Any, *, rationalize: bool = True) -> list[Obj]:
    """RFC 6902 operations (add, remove, replace) that turn ``a`` into ``b``. Arrays are
    compared index by index; with ``rationalize`` a container whose changes take more
    bytes than replacing it whole is replaced whole (jsondiff's ``Rationalize``).
    Removes from an array come last-first, so the operations apply in order."""
    ops: list[Obj] = []
    _compare(a, b, [], ops, 0, rationalize)
    return ops


def _compare(a: Any, b: Any, path: list[str], ops: list[Obj], depth: int,
             rationalize: bool) -> None:
    if a == b and type(a) is type(b):
        return
    pointer = jsonpointer.join(path)
    container = (isinstance(a, dict) and isinstance(b, dict)) or \
        (isinstance(a, list) and isinstance(b, list))
    if not container or depth >= _MAX_DIFF_DEPTH:
        ops.append({"op": "replace", "path": pointer, "value": b, "oldValue": a})
        return
    inner: list[Obj] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key, value in a.items():
            if key not in b:
                inner.append({"op": "remove", "path": jsonpointer.join([*path, key]),
                              "oldValue": value})
        for key, value in b.items():
            if key not in a:
                inner.append({"op": "add", "path": jsonpointer.join([*path, key]),
                              "value": value})
            else:
                _compare(a[key], value, [*path, key], inner, depth + 1, rationalize)
    else:
        assert isinstance(a, list) and isinstance(b, list)
        for index in range(min(len(a), len(b))):
            _compare(a[index], b[index], [*path, str(index)], inner, depth + 1,
                     rationalize)
        for index in range(len(a), len(b)):
            inner.append({"op": "add", "path": jsonpointer.join([*path, str(index)]),
                          "value": b[index]})
        for index in range(len(a) - 1, len(b) - 1, -1):
            inner.append({"op": "remove", "path": jsonpointer.join([*path, str(index)]),
                          "oldValue": a[index]})
    whole = {"op": "replace", "path": pointer, "value": b, "oldValue": a}
    if rationalize and path and len(inner) > 1 and _size(inner) > _size([whole]):
        ops.append(whole)
    else:
        ops.extend(inner)


def _size(ops: list[Obj]) -> int:
    return len(json.dumps([{k: v for k, v in op.items() if k != "oldValue"} for op in ops],
                          default=str))


def object_diff(live: Mapping[str, Any], dry: Mapping[str, Any]) -> list[Obj]:
    """The operations that turn the live object into its dry-run: labels and annotations
    added or changed (removals are left out: the cluster's own controllers add some),
    then every difference outside ``metadata`` and ``status``. Each operation keeps the
    value it replaces as ``oldValue`` (not part of RFC 6902; ``patch_of`` drops it)."""
    def labelled(obj: Mapping[str, Any]) -> Obj:
        meta = obj.get("metadata") or {}
        kept = {k: copy.deepcopy(meta[k]) for k in ("annotations", "labels") if k in meta}
        return {"metadata": kept} if kept else {}

    # not rationalised: a map replaced whole would hide removals among the changes
    ops = [op for op in compare(labelled(live), labelled(dry), rationalize=False)
           if op["op"] in ("add", "replace")]
    ops.extend(compare(_without_noise(live), _without_noise(dry)))
    return ops


def patch_of(ops: Sequence[Mapping[str, Any]]) -> list[Obj]:
    """``ops`` as an RFC 6902 patch (without the ``oldValue`` they carry)."""
    return [{k: v for k, v in op.items() if k != "oldValue"} for op in ops]


def mask_secret_patch(ops: Sequence[Mapping[str, Any]]) -> list[Obj]:
    """A copy of a Secret's diff with the values of ``data`` and ``stringData`` masked:
    ``***`` for one added or removed, ``*** (before)``/``*** (after)`` for one changed."""
    out: list[Obj] = []
    for op in ops:
        masked = copy.deepcopy(dict(op))
        path = str(masked.get("path") or "")
        old, new = masked.get("oldValue"), masked.get("value")
        changed = "oldValue" in masked and "value" in masked
        if path in ("/data", "/stringData"):
            _mask_map(masked, old, new)
        elif path.startswith(("/data/", "/stringData/")):
            if "oldValue" in masked:
                masked["oldValue"] = SECRET_MASK_BEFORE if changed else SECRET_MASK
            if "value" in masked:
                masked["value"] = SECRET_MASK_AFTER if changed else SECRET_MASK
        out.append(masked)
    return out


def _mask_map(op: Obj, old: Any, new: Any) -> None:
    before = dict(old) if isinstance(old, dict) else {}
    after = dict(new) if isinstance(new, dict) else {}
    changed = {k for k in before if k in after and before[k] != after[k]}
    before = {k: SECRET_MASK_BEFORE if k in changed else SECRET_MASK for k in before}
    after = {k: SECRET_MASK_AFTER if k in changed else SECRET_MASK for k in after}
    if "oldValue" in op:
        op["oldValue"] = before if isinstance(old, dict) else SECRET_MASK
    if "value" in op:
        op["value"] = after if isinstance(new, dict) else SECRET_MASK


def _owns(fields: Any, doc: Any, tokens: Sequence[str]) -> bool:
    """Whether a FieldsV1 set covers the field at ``tokens`` of ``doc``: the field
    itself, something below it, or an atomic value above it."""
    node, value = fields, doc
    for depth, token in enumerate(tokens):
        if not isinstance(node, dict):
            return False
        if depth and not node:
            return True  # an atomic ancestor, owned whole
        if isinstance(value, dict):
            node, value = node.get(f"f:{token}"), value.get(token)
        elif isinstance(value, list) and (index := _index(value, token)) is not None:
            item = value[index]
            node, value = node.get(_element_key(node, item, index) or ""), item
        else:
            return False
        if node is None:
            return False
    return isinstance(node, dict)


def _element_key(node: Mapping[str, Any], item: Any, index: int) -> str | None:
    for key in node:
        kind, _, raw = key.partition(":")
        try:
            parsed = json.loads(raw) if kind in ("k", "v") else None
        except ValueError:
            continue
        if kind == "k" and isinstance(parsed, dict) and isinstance(item, dict) and all(
                item.get(k, "TCP" if k == "protocol" else None) == v
                for k, v in parsed.items()):
            return key
        if kind == "v" and parsed == item:
            return key
        if kind == "i" and raw == str(index):
            return key
    return None


# --- the manager -------------------------------------------------------------------------

@dataclass
class _Plan:
    live: Obj | None
    dry: Obj | None = None
    skipped: bool = False
    recreate: bool = False


@dataclass
class _Item:
    desired: Obj
    stage: int
    meta: ObjMeta
    version: str
    plan: _Plan | None = None  # None: not dry-run yet (or the server could not judge it)


@dataclass
class _Outcome:
    entry: ChangeSetEntry
    payload: Obj | None = None  # what to apply, when the object needs a write
    wrote: bool = False         # the preparation itself wrote (cleanup, recreate)


class ResourceManager:
    """Applies and prunes sets of objects with server-side apply as ``owner``."""

    def __init__(self, *, client: KubeAPI, owner: str, owner_labels: Mapping[str, str],
                 clock: Clock, concurrency: int = 4,
                 override_managers: Sequence[str] = (), poll_interval: float = 0.5) -> None:
        self.client = client
        self.owner = owner
        self.owner_labels = dict(owner_labels)
        self.clock = clock
        self.concurrency = max(1, concurrency)
        self.poll_interval = poll_interval
        #: (name prefix, operation) of the managers whose fields we take over
        self.takeover: tuple[tuple[str, str], ...] = (
            ("kubectl", "Apply"), ("kubectl", "Update"), ("before-first-apply", "Update"),
            (owner, "Update"),
            *((m, op) for m in override_managers for op in ("Apply", "Update")))

    # --- apply ---------------------------------------------------------------------

    async def apply_all_staged(self, objects: Sequence[Mapping[str, Any]], *,
                               force: bool = False, ignore: Sequence[IgnoreRule] = (),
                               wait_timeout: float = 60) -> ChangeSet:
        for rule in ignore:
            try:
                rule.check()
            except ValueError as exc:  # regex.RegexError too
                raise ApplyError(f"failed to create ignore rule selector: {exc}") from exc
        items = [self._item(obj) for obj in objects]
        items.sort(key=lambda i: (i.stage, sort_key(i.meta)))
        crd_kinds = {(str((o.desired.get("spec") or {}).get("group") or ""),
                      str(((o.desired.get("spec") or {}).get("names") or {}).get("kind") or ""))
                     for o in items if _is_crd(o.desired)}
        new_namespaces = await self._missing_namespaces(items)

        # Everything the server can judge now is dry-run before the first write.
        await self._plan_all(items, force, crd_kinds, new_namespaces)

        result = ChangeSet()
        dirty = False  # a stage wrote since the remaining objects were dry-run
        refreshed = False
        for stage in (0, 1, 2):
            if stage > 0:
                stale = [i for i in items if i.stage >= stage and (dirty or i.plan is None)]
                if stale:
                    if not refreshed and any(_is_crd(i.desired) for i in items):
                        await self.client.refresh_mapping()  # serve the new kinds
                        refreshed = True
                    # all that is left is judged again before this stage writes
                    await self._plan_all(stale, force, set(), set())
                    dirty = False
            batch = [i for i in items if i.stage == stage]
            if not batch:
                continue
            unplanned = [i for i in batch if i.plan is None]
            if unplanned:
                await self._plan_all(unplanned, force, set(), set())
            entries, wrote = await self._execute(batch, ignore, wait_timeout)
            dirty = dirty or wrote
            result.extend(entries)
            if stage < 2:
                await self._wait_ready([e for e in entries if e.action is not Action.SKIPPED],
                                       batch, wait_timeout)
        return result

    def _item(self, obj: Mapping[str, Any]) -> _Item:
        desired = normalize(obj)
        meta = desired.setdefault("metadata", {})
        if not isinstance(meta, dict) or not desired.get("apiVersion") or \
                not desired.get("kind") or not meta.get("name"):
            raise ApplyError(f"object has no apiVersion, kind or name: "
                             f"{json.dumps(obj, default=str)[:200]}")
        meta["labels"] = {**(meta.get("labels") or {}), **self.owner_labels}
        api_version = str(desired["apiVersion"])
        return _Item(desired=desired, stage=stage_of(desired), meta=ObjMeta.of(desired),
                     version=_version_of(api_version))

    async def _missing_namespaces(self, items: Sequence[_Item]) -> set[str]:
        """Namespaces of the set that do not exist yet."""
        missing: set[str] = set()
        for item in items:
            if item.desired.get("kind") == "Namespace" and item.desired["apiVersion"] == "v1" \
                    and await self._get("v1", "Namespace", item.meta.name, None) is None:
                missing.add(item.meta.name)
        return missing

    async def _plan_all(self, items: Sequence[_Item], force: bool,
                        crd_kinds: set[tuple[str, str]], new_namespaces: set[str]) -> None:
        async def plan(item: _Item) -> None:
            item.plan = await self._plan(item, force, crd_kinds, new_namespaces)

        results = await self._bounded(items, plan, stop_on_error=False)
        for outcome in results:
            if isinstance(outcome, ResourceError):
                raise outcome

    async def _plan(self, item: _Item, force: bool, crd_kinds: set[tuple[str, str]],
                    new_namespaces: set[str]) -> _Plan | None:
        """GET, skip checks and dry-run of one object; None when the server cannot
        judge it yet (its kind or namespace comes with this set)."""
        desired = item.desired
        api_version, kind = str(desired["apiVersion"]), str(desired["kind"])
        try:
            mapping = await self.client.mapping(api_version, kind)
        except NotFound as exc:
            if (item.meta.group, kind) in crd_kinds:
                return None
            raise _dry_run_error(item.meta, exc) from exc
        except KubeError as exc:
            raise _dry_run_error(item.meta, exc) from exc
        namespace = str(desired["metadata"].get("namespace") or "")
        if not mapping.namespaced:
            namespace = ""
            desired["metadata"].pop("namespace", None)
        item.meta = ObjMeta(item.meta.group, kind, namespace, item.meta.name)
        if mapping.namespaced and namespace in new_namespaces:
            return None
        if self._should_skip(desired, None):
            return _Plan(None, skipped=True)
        live: Obj | None = None
        if any_in_metadata(desired, {SSA_KEY: SSA_IF_NOT_PRESENT}):
            live = await self._get(api_version, kind, item.meta.name, namespace or None)
            if self._should_skip(desired, live):
                return _Plan(live, skipped=True)
        try:
            dry = await self.client.apply(desired, force=True, dry_run=True,
                                          field_manager=self.owner)
        except KubeError as exc:
            live = live or await self._get(api_version, kind, item.meta.name,
                                           namespace or None)
            if live is not None and self._should_skip(desired, live):
                return _Plan(live, skipped=True)
            if live is not None and self._should_recreate(desired, live, force, exc):
                return _Plan(live, recreate=True)
            raise _dry_run_error(item.meta, exc) from exc
        # Read the live object only when there is one: a dry-run without a
        # resourceVersion is a create, so nothing exists to compare or clean up.
        if live is None and (dry.get("metadata") or {}).get("resourceVersion"):
            live = await self._get(api_version, kind, item.meta.name, namespace or None)
        if live is not None and self._should_skip(desired, live):
            return _Plan(live, skipped=True)
        return _Plan(live, dry)

    async def _get(self, api_version: str, kind: str, name: str,
                   namespace: str | None) -> Obj | None:
        """The live object; None when absent or unreadable (the dry-run then tells)."""
        try:
            return await self.client.get(api_version, kind, name, namespace)
        except KubeError:
            return None

    @staticmethod
    def _should_skip(desired: Obj, live: Obj | None) -> bool:
        excluded = {RECONCILE_KEY: DISABLED, SSA_KEY: SSA_IGNORE}
        if any_in_metadata(desired, excluded) or any_in_metadata(live, excluded):
            return True
        exists = bool(((live or {}).get("metadata") or {}).get("uid"))
        return exists and any_in_metadata(desired, {SSA_KEY: SSA_IF_NOT_PRESENT})

    @staticmethod
    def _should_recreate(desired: Obj, live: Obj, force: bool, exc: KubeError) -> bool:
        immutable = isinstance(exc, (Conflict, Invalid)) or bool(
            _IMMUTABLE_MESSAGE.search(exc.message))
        selector = {FORCE_KEY: ENABLED}
        return immutable and (force or any_in_metadata(desired, selector)
                              or any_in_metadata(live, selector))

    async def _execute(self, batch: Sequence[_Item], ignore: Sequence[IgnoreRule],
                       wait_timeout: float
                       ) -> tuple[list[ChangeSetEntry], bool]:
        """Cleanup, drift and recreate for a stage's planned objects, then the writes."""
        async def prepare(item: _Item) -> _Outcome:
            return await self._prepare(item, ignore, wait_timeout)

        prepared = await self._bounded(batch, prepare, stop_on_error=True)
        wrote = any(isinstance(p, _Outcome) and p.wrote for p in prepared)
        for outcome in prepared:
            if isinstance(outcome, ResourceError):
                raise outcome
        outcomes = [p for p in prepared if isinstance(p, _Outcome)]

        async def write(outcome: _Outcome) -> None:
            assert outcome.payload is not None
            try:
                answer = await self.client.apply(outcome.payload, force=True,
                                                 field_manager=self.owner)
            except KubeError as exc:
                raise ApplyError(f"{outcome.entry.subject} apply failed: {exc.message}",
                                 meta=outcome.entry.meta, cause=exc) from exc
            entry = outcome.entry
            outcome.entry = ChangeSetEntry(entry.meta, entry.version, entry.action, answer)

        pending = [o for o in outcomes if o.payload is not None]
        written = await self._bounded(pending, write, stop_on_error=True)
        for done in written:
            if isinstance(done, ResourceError):
                raise done
        return [o.entry for o in outcomes], wrote or bool(pending)

    async def _prepare(self, item: _Item, ignore: Sequence[IgnoreRule],
                       wait_timeout: float) -> _Outcome:
        plan = item.plan
        assert plan is not None
        if plan.skipped:
            return _Outcome(ChangeSetEntry(item.meta, item.version, Action.SKIPPED,
                                           plan.live))
        wrote = False
        if plan.recreate:
            plan = item.plan = await self._recreate(item, wait_timeout)
            wrote = True
        assert plan.dry is not None
        live = plan.live
        if live is not None and not self._merge_only(item.desired, live):
            wrote = await self._cleanup(item, live) or wrote
        paths = ignored_paths(ignore, plan.dry) if live is not None else []
        if not wrote and not has_drifted(live, plan.dry, paths):
            return _Outcome(ChangeSetEntry(item.meta, item.version, Action.UNCHANGED, live))
        created = not (plan.dry.get("metadata") or {}).get("resourceVersion")
        payload = item.desired
        if live is not None and paths:
            payload = self._reshape(payload, live, plan.dry, paths)
        action = Action.CREATED if created else Action.CONFIGURED
        return _Outcome(ChangeSetEntry(item.meta, item.version, action), payload, wrote)

    @staticmethod
    def _merge_only(desired: Obj, live: Obj) -> bool:
        merge = {SSA_KEY: SSA_MERGE}
        return any_in_metadata(desired, merge) or any_in_metadata(live, merge)

    async def _recreate(self, item: _Item, wait_timeout: float) -> _Plan:
        """Delete the object whose immutable fields change, wait until it is gone, and
        dry-run the desired one again."""
        desired, meta = item.desired, item.meta
        api_version, kind = str(desired["apiVersion"]), meta.kind
        try:
            await self.client.delete(api_version, kind, meta.name, meta.namespace or None,
                                     propagation="Background")
        except NotFound:
            pass
        except KubeError as exc:
            raise ApplyError(f"{meta.subject} immutable field detected, failed to delete "
                             f"object: {exc.message}", meta=meta, cause=exc) from exc
        if not await self._gone(api_version, meta, wait_timeout):
            raise ApplyError(f"{meta.subject} immutable field detected, failed to wait for "
                             "object to be deleted: timed out waiting for the condition",
                             meta=meta)
        try:
            dry = await self.client.apply(desired, force=True, dry_run=True,
                                          field_manager=self.owner)
        except KubeError as exc:
            raise _dry_run_error(meta, exc) from exc
        return _Plan(None, dry)

    async def _gone(self, api_version: str, meta: ObjMeta,
                    timeout: float) -> bool:  # noqa: ASYNC109 - polled on the injected clock
        deadline = self.clock.monotonic() + timeout
        for _ in range(int(timeout / self.poll_interval) + 2):
            try:
                await self.client.get(api_version, meta.kind, meta.name, meta.namespace or None)
            except NotFound:
                return True
            except KubeError:
                pass
            if self.clock.monotonic() >= deadline:
                return False
            await self.clock.sleep(self.poll_interval)
        return False

    async def _cleanup(self, item: _Item, live: Obj) -> bool:
        """Remove what earlier tools left (annotations, labels) and hand the fields of
        the managers we take over to us; True when something was patched."""
        meta = live.get("metadata") or {}
        ops: list[Obj] = []
        annotations = meta.get("annotations") or {}
        for key in CLEANUP_ANNOTATIONS:
            if key in annotations:
                ops.append({"op": "remove",
                            "path": jsonpointer.join(("metadata", "annotations", key))})
        labels = meta.get("labels") or {}
        for key in CLEANUP_LABELS:
            if key in labels:
                ops.append({"op": "remove", "path": jsonpointer.join(("metadata", "labels", key))})
        entries = [dict(e) for e in meta.get("managedFields") or [] if isinstance(e, dict)]
        renamed = False
        for entry in entries:
            if entry.get("subresource"):
                continue
            name, operation = str(entry.get("manager") or ""), entry.get("operation")
            if any(name.startswith(prefix) and operation == op for prefix, op in self.takeover):
                entry["manager"], entry["operation"] = self.owner, "Apply"
                renamed = True
        if renamed:
            ops.append({"op": "replace", "path": "/metadata/managedFields", "value": entries})
        if not ops:
            return False
        try:
            mapping = await self.client.mapping(str(item.desired["apiVersion"]), item.meta.kind)
            await self.client.request(
                "PATCH", mapping.path(item.meta.namespace or None, item.meta.name), body=ops,
                content_type=JSON_PATCH, query=[("fieldManager", self.owner)])
        except KubeError as exc:
            raise ApplyError(f"{item.meta.subject} metadata.managedFields cleanup failed: "
                             f"{exc.message}", meta=item.meta, cause=exc) from exc
        return True

    def _reshape(self, desired: Obj, live: Obj, dry: Obj,
                 paths: Sequence[Sequence[str]]) -> Obj:
        """The payload with ignored fields that drifted left alone: dropped when another
        applier owns them (so its value stays), else the live value kept (so dropping
        a field only we own does not delete it)."""
        payload = copy.deepcopy(desired)
        managed = [e for e in (live.get("metadata") or {}).get("managedFields") or []
                   if isinstance(e, dict)]
        for tokens in paths:
            in_live, live_value = _lookup(live, tokens)
            in_dry, dry_value = _lookup(dry, tokens)
            if in_live == in_dry and live_value == dry_value:
                continue
            others = any(e.get("operation") == "Apply" and e.get("manager") != self.owner
                         and not e.get("subresource")
                         and _owns(e.get("fieldsV1") or {}, live, tokens) for e in managed)
            if others:
                remove_path(payload, tokens)
            elif in_live:
                _set(payload, tokens, copy.deepcopy(live_value))
        return payload

    async def _wait_ready(self, entries: Sequence[ChangeSetEntry], items: Sequence[_Item],
                          timeout: float) -> None:  # noqa: ASYNC109 - the injected clock
        """Poll until every entry exists, is not being deleted and, for CRDs, is
        Established."""
        versions = {i.meta: str(i.desired["apiVersion"]) for i in items}
        waiting = list(entries)
        deadline = self.clock.monotonic() + timeout
        states: dict[ObjMeta, str] = {}
        for _ in range(int(timeout / self.poll_interval) + 2):
            still: list[ChangeSetEntry] = []
            for entry in waiting:
                states[entry.meta] = await self._readiness(versions[entry.meta], entry.meta)
                if states[entry.meta] != "Current":
                    still.append(entry)
            waiting = still
            if not waiting:
                return
            if self.clock.monotonic() >= deadline:
                break
            await self.clock.sleep(self.poll_interval)
        shown = ", ".join(f"{e.subject} status: '{states.get(e.meta, 'Unknown')}'"
                          for e in waiting)
        raise WaitError(f"timeout waiting for: [{shown}]")

    async def _readiness(self, api_version: str, meta: ObjMeta) -> str:
        """A kstatus-like verdict for the objects stages wait on."""
        try:
            obj = await self.client.get(api_version, meta.kind, meta.name, meta.namespace or None)
        except NotFound:
            return "NotFound"
        except KubeError:
            return "Unknown"
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return "Terminating"
        if _is_crd(obj):
            conditions = (obj.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "NamesAccepted" and c.get("status") == "False"
                   for c in conditions):
                return "Failed"
            if not any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in conditions):
                return "InProgress"
        return "Current"

    async def _bounded(self, items: Sequence[T], work: Callable[[T], Awaitable[R]], *,
                       stop_on_error: bool) -> list[R | ResourceError | None]:
        """``work`` over ``items``, at most ``concurrency`` at once, results in order.
        A ResourceError is kept as that item's result; with ``stop_on_error`` no new
        item starts after one (those not started stay None)."""
        results: list[R | ResourceError | None] = [None] * len(items)
        queue = iter(enumerate(items))
        failed = False

        async def worker() -> None:
            nonlocal failed
            for index, item in queue:
                if failed and stop_on_error:
                    return
                try:
                    results[index] = await work(item)
                except ResourceError as exc:
                    results[index] = exc
                    failed = True

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.concurrency, len(items))):
                group.create_task(worker())
        return results

    # --- prune ---------------------------------------------------------------------

    async def delete_all(self, entries: Sequence[tuple[ObjMeta, str]], *,
                         owner_labels: Mapping[str, str] | None = None
                         ) -> tuple[ChangeSet, list[DeleteError]]:
        """Delete (background propagation) the objects that still carry all the owner
        labels and do not opt out (``prune: disabled``, ``reconcile: disabled``,
        ``ssa: Ignore``), in reverse apply order. An object already gone counts as
        deleted; failures come back as errors with action ``unknown``."""
        owners = dict(self.owner_labels if owner_labels is None else owner_labels)
        ordered = sorted(entries, key=lambda e: sort_key(e[0]), reverse=True)
        result = ChangeSet()
        errors: list[DeleteError] = []
        for meta, version in ordered:
            action, error = await self._delete(meta, version, owners)
            result.entries.append(ChangeSetEntry(meta, version, action))
            if error is not None:
                errors.append(error)
        return result, errors

    async def _delete(self, meta: ObjMeta, version: str,
                      owners: Mapping[str, str]) -> tuple[Action, DeleteError | None]:
        try:
            try:
                api_version = await self._api_version(meta, version)
                live = await self.client.get(api_version, meta.kind, meta.name,
                                             meta.namespace or None)
            except NotFound as exc:
                if exc.reason != "NoKindMatch" or not version:
                    raise
                # the recorded version is no longer served: ask in the preferred one
                api_version = await self._api_version(meta, "")
                live = await self.client.get(api_version, meta.kind, meta.name,
                                             meta.namespace or None)
        except NotFound:
            return Action.DELETED, None  # also when the kind is no longer served
        except KubeError as exc:
            return Action.UNKNOWN, DeleteError(f"{meta.subject} query failed: {exc.message}",
                                               meta=meta, cause=exc)
        labels = (live.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in owners.items()):
            return Action.SKIPPED, None
        if any_in_metadata(live, {PRUNE_KEY: DISABLED, RECONCILE_KEY: DISABLED,
                                  SSA_KEY: SSA_IGNORE}):
            return Action.SKIPPED, None
        try:
            await self.client.delete(api_version, meta.kind, meta.name, meta.namespace or None,
                                     propagation="Background")
        except NotFound:
            return Action.DELETED, None
        except KubeError as exc:
            return Action.UNKNOWN, DeleteError(f"{meta.subject} delete failed: {exc.message}",
                                               meta=meta, cause=exc)
        return Action.DELETED, None

    async def _api_version(self, meta: ObjMeta, version: str) -> str:
        """The API version to address an object with; the group's preferred one when
        the inventory did not record a version."""
        if version:
            return meta.api_version(version)
        if not meta.group:
            return "v1"
        doc = await self.client.request("GET", f"/apis/{meta.group}")
        preferred = ((doc or {}).get("preferredVersion") or {}).get("version")
        if not preferred:
            raise NotFound(404, f"the server could not find the requested resource "
                                f"(group {meta.group})")
        return meta.api_version(str(preferred))

    async def wait_for_termination(self, entries: Sequence[ObjMeta | tuple[ObjMeta, str]],
                                   *, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until every object is gone (NotFound); WaitError names the first one
        still there when ``timeout`` runs out."""
        deadline = self.clock.monotonic() + timeout
        for entry in entries:
            meta, version = entry if isinstance(entry, tuple) else (entry, "")
            try:
                api_version = await self._api_version(meta, version)
            except NotFound:
                continue  # the kind is gone, and its objects with it
            left = max(0.0, deadline - self.clock.monotonic())
            if not await self._gone(api_version, meta, left):
                raise WaitError(f"{meta.subject} termination timeout, error: timed out "
                                "waiting for the condition", meta=meta)
