"""The kinds the development API server serves.

A ``ResourceType`` is one (group, version, plural) endpoint: its kind, scope, short names,
subresources, what the server does with ``generation``, and the schema that strategic
merge patch and server-side apply consult. Several versions of one resource share one
storage (``storage``), so a custom resource served at two versions, or ``Event`` served
by ``v1`` and ``events.k8s.io/v1``, is one object seen two ways.

``Registry`` holds the built-in kinds and the kinds that applied CRDs add; it is rebuilt
from a CRD whenever that CRD changes, so a new CRD is served at once. Discovery sees a new
CRD's kinds only ``discovery_delay`` seconds later (``discoverable``), as on a real server,
where the CRD's endpoints are served once its names are accepted but discovery follows
from controllers of its own (establishing, then discovery): a client that creates a CRD
and at once looks its kind up in discovery must retry, and the dev server makes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fluxd.clock import Clock
from fluxd.schema import BuiltinSchema, FieldSchema, OpenAPISchema

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

StorageKey = tuple[str, str]  # (group, plural)


@dataclass(frozen=True)
class ScalePaths:
    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = ".status.selector"


@dataclass(frozen=True, eq=False)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = VERBS
    #: metadata.generation is maintained (bumped on spec change)
    generation: bool = False
    #: shares storage with another resource (events.k8s.io events are core events)
    storage_of: StorageKey | None = None
    #: review kinds: create-only, answered but never stored
    virtual: bool = False
    #: CRD-served kinds: the CRD's name, version schema and printer columns
    crd: str | None = None
    openapi: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    scale: ScalePaths | None = None
    storage_version: str = ""
    field_schema: FieldSchema = field(default_factory=BuiltinSchema)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def storage(self) -> StorageKey:
        return self.storage_of or (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``pods``: how the server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


def _builtin(group: str, version: str, kind: str, plural: str, *, namespaced: bool = True,
             short: tuple[str, ...] = (), status: bool = False, scale: bool = False,
             generation: bool = False, categories: tuple[str, ...] = (),
             storage_of: StorageKey | None = None, extra: tuple[str, ...] = (),
             virtual: bool = False) -> ResourceType:
    subs = set(extra)
    if status:
        subs.add("status")
    if scale:
        subs.add("scale")
    return ResourceType(
        group=group, version=version, kind=kind, plural=plural, singular=kind.lower(),
        namespaced=namespaced, short_names=short, categories=categories,
        subresources=frozenset(subs), generation=generation, storage_of=storage_of,
        scale=ScalePaths() if scale else None, virtual=virtual,
        verbs=("create",) if virtual else VERBS, storage_version=version,
    )


ALL = ("all",)

BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "v1", "Namespace", "namespaces", namespaced=False, short=("ns",),
             status=True, extra=("finalize",)),
    _builtin("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    _builtin("", "v1", "Secret", "secrets"),
    _builtin("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",)),
    _builtin("", "v1", "Service", "services", short=("svc",), status=True, categories=ALL),
    _builtin("", "v1", "Pod", "pods", short=("po",), status=True, categories=ALL),
    _builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",),
             status=True),
    _builtin("", "v1", "Event", "events", short=("ev",)),
    _builtin("events.k8s.io", "v1", "Event", "events", short=("ev",),
             storage_of=("", "events")),
    _builtin("apps", "v1", "Deployment", "deployments", short=("deploy",), status=True,
             scale=True, generation=True, categories=ALL),
    _builtin("apps", "v1", "StatefulSet", "statefulsets", short=("sts",), status=True,
             scale=True, generation=True, categories=ALL),
    _builtin("apps", "v1", "DaemonSet", "daemonsets", short=("ds",), status=True,
             generation=True, categories=ALL),
    _builtin("apps", "v1", "ReplicaSet", "replicasets", short=("rs",), status=True,
             scale=True, generation=True, categories=ALL),
    _builtin("batch", "v1", "Job", "jobs", status=True, generation=True, categories=ALL),
    _builtin("batch", "v1", "CronJob", "cronjobs", short=("cj",), status=True,
             generation=True, categories=ALL),
    _builtin("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",), status=True,
             generation=True),
    _builtin("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False,
             generation=True),
    _builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies",
             short=("netpol",), generation=True),
    _builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",),
             status=True, generation=True),
    _builtin("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
             short=("hpa",), status=True, categories=ALL),
    _builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False,
             short=("sc",)),
    _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles",
             namespaced=False),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
             namespaced=False),
    _builtin("coordination.k8s.io", "v1", "Lease", "leases"),
    _builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
             "customresourcedefinitions", namespaced=False, short=("crd", "crds"),
             status=True, generation=True),
    _builtin("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
             "selfsubjectaccessreviews", namespaced=False, virtual=True),
    _builtin("authorization.k8s.io", "v1", "SelfSubjectRulesReview",
             "selfsubjectrulesreviews", namespaced=False, virtual=True),
    _builtin("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
             namespaced=False, virtual=True),
    _builtin("authorization.k8s.io", "v1", "LocalSubjectAccessReview",
             "localsubjectaccessreviews", virtual=True),
    _builtin("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
             namespaced=False, virtual=True),
)

# Preferred-version order of the built-in groups, as discovery lists them.
BUILTIN_GROUP_ORDER = (
    "", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io",
    "autoscaling", "batch", "networking.k8s.io", "policy", "rbac.authorization.k8s.io",
    "storage.k8s.io", "apiextensions.k8s.io", "coordination.k8s.io",
)


class CRDError(ValueError):
    """A CRD that cannot be served (names clash, no served version, …)."""


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group") or ""
    plural = names.get("plural") or ""
    kind = names.get("kind") or ""
    if not group or not plural or not kind:
        raise CRDError("spec.group, spec.names.plural and spec.names.kind are required")
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    versions = spec.get("versions") or []
    storage_version = next((v["name"] for v in versions if v.get("storage")), "")
    out = []
    for ver in versions:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        schema = ((ver.get("schema") or {}).get("openAPIV3Schema")) or {}
        scale = subs.get("scale")
        out.append(ResourceType(
            group=group, version=ver["name"], kind=kind, plural=plural,
            singular=names.get("singular") or kind.lower(), namespaced=namespaced,
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=frozenset(k for k in ("status", "scale") if k in subs),
            generation=True, crd=(crd.get("metadata") or {}).get("name"),
            openapi=schema or None,
            printer_columns=tuple(ver.get("additionalPrinterColumns") or ()),
            scale=ScalePaths(
                spec_replicas=scale.get("specReplicasPath", ".spec.replicas"),
                status_replicas=scale.get("statusReplicasPath", ".status.replicas"),
                label_selector=scale.get("labelSelectorPath"),
            ) if isinstance(scale, dict) else None,
            storage_version=storage_version,
            field_schema=OpenAPISchema(schema),
        ))
    return out


class DiscoveryView:
    """The kinds discovery lists at one moment: what discovery documents are built from."""

    def __init__(self, types: list[ResourceType]) -> None:
        self._types = types

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(self._types)

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions in preference order); core group first."""
        return _groups(self._types)


class Registry:
    def __init__(self, clock: Clock, *, discovery_delay: float = 0.3) -> None:
        self._clock = clock
        #: seconds between a CRD version being served and its appearance in discovery
        self.discovery_delay = discovery_delay
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._crd_types: dict[str, list[ResourceType]] = {}
        #: when (clock.monotonic) each CRD-served endpoint was first served
        self._served_since: dict[tuple[str, str, str], float] = {}
        for rt in BUILTINS:
            self._by_gvr[(rt.group, rt.version, rt.plural)] = rt

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._by_gvr.values()))

    def by_kind(self, group: str, kind: str) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.group == group and rt.kind == kind]

    def for_api_version(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        return next((rt for rt in self._by_gvr.values()
                     if rt.group == group and rt.version == version and rt.kind == kind), None)

    def versions_of(self, storage: StorageKey) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.storage == storage]

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions in preference order) of everything served; core group first."""
        return _groups(self._by_gvr.values())

    def settle(self) -> None:
        """Count every CRD served so far as long since listed (a cluster's CRDs installed
        before anyone uses it); the lifecycle marks them Established at once."""
        for key in self._served_since:
            self._served_since[key] = float("-inf")

    def establishing_left(self, name: str) -> float:
        """Seconds until the CRD ``name`` is Established: it is once all its served
        versions have been served ``discovery_delay`` seconds, as discovery lists them
        (on a real server the establishing controller marks it, and discovery follows)."""
        types = self._crd_types.get(name)
        if not types:
            return self.discovery_delay
        now = self._clock.monotonic()
        return max(0.0, max(self._served_since.get((rt.group, rt.version, rt.plural), now)
                            + self.discovery_delay - now for rt in types))

    def discoverable(self) -> DiscoveryView:
        """What discovery shows now: every built-in kind, and the CRD kinds served for at
        least ``discovery_delay`` seconds."""
        now = self._clock.monotonic()
        return DiscoveryView([
            rt for key, rt in self._by_gvr.items()
            if rt.crd is None or now - self._served_since.get(key, now) >= self.discovery_delay])

    def set_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        """Serve (or re-serve) a CRD's kinds; raises CRDError if it cannot be served."""
        name = (crd.get("metadata") or {}).get("name") or ""
        types = types_from_crd(crd)
        expected = f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
        if name != expected:
            raise CRDError(f'metadata.name: Invalid value: "{name}": must be spec.names.plural'
                           f'+"."+spec.group')
        for rt in types:
            existing = self._by_gvr.get((rt.group, rt.version, rt.plural))
            if existing is not None and existing.crd != name:
                raise CRDError(f"{rt.plural}.{rt.group}/{rt.version} is already served")
        since = self._served_since
        kept = {key: since[key] for key in ((rt.group, rt.version, rt.plural) for rt in types)
                if key in since}
        self.remove_crd(name)
        now = self._clock.monotonic()
        for rt in types:
            key = (rt.group, rt.version, rt.plural)
            self._by_gvr[key] = rt
            # an update keeps a version's place in discovery; a new version waits
            since[key] = kept.get(key, now)
        self._crd_types[name] = types
        return types

    def remove_crd(self, name: str) -> list[ResourceType]:
        types = self._crd_types.pop(name, [])
        for rt in types:
            key = (rt.group, rt.version, rt.plural)
            self._by_gvr.pop(key, None)
            self._served_since.pop(key, None)
        return types

    def crd_types(self) -> Iterable[tuple[str, list[ResourceType]]]:
        return self._crd_types.items()


def _groups(types: Iterable[ResourceType]) -> list[tuple[str, list[str]]]:
    seen: dict[str, list[str]] = {}
    for rt in types:
        versions = seen.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
    order = {g: i for i, g in enumerate(BUILTIN_GROUP_ORDER)}
    groups = sorted(seen, key=lambda g: (order.get(g, len(order)), g))
    return [(g, sorted(seen[g], key=version_priority)) for g in groups]


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version ordering: GA > beta > alpha, then higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, version)
