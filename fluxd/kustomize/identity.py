"""Object identity in a kustomize build: namespace, name prefix/suffix, name references.

Reproduces kustomize v5.7.1's NamespaceTransformer, PrefixTransformer/SuffixTransformer
and the name-reference fix-up that runs once at the end of a build, with their default
field specs, on plain dicts mutated in place. Anything not reproduced exactly, or any
input on which kustomize fails (an ID conflict, an ambiguous reference, a field spec
path crossing a scalar, ...), raises ``Unsupported``.

Bookkeeping lives where kustomize keeps it, in build annotations on the objects (comma-
separated lists, one entry per rename; the engine strips them at the end):

- ``internal.config.kubernetes.io/previousNames``, ``.../previousNamespaces`` and
  ``.../previousKinds``: the ids an object had before each rename, oldest first. A
  namespace is stored as kustomize's "effective" one: ``default`` for an unset
  namespace, ``_non_namespaceable_`` for a cluster-scoped kind. Call
  ``store_previous_id(obj)`` *before* changing an object's name (the generator hash
  suffix does so, as kustomize's HashTransformer does).
- ``internal.config.kubernetes.io/prefixes`` and ``.../suffixes``: the prefixes and
  suffixes added, innermost kustomization first; name references prefer targets renamed
  in the same context as the referrer.

A name reference is only rewritten when its value is a *previous* name of an object of
the referred kind (an object never renamed is never a target), the object is visible
from the referrer (same effective namespace, cluster-scoped, a ServiceAccount, or in a
namespace a RoleBinding names for a ServiceAccount subject), and the choice is unique
after preferring the referrer's prefix/suffix context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fluxd.kustomize.fieldspec import FieldSpec, SetValue, apply_field_spec, walk
from fluxd.kustomize.kyaml import Unsupported

__all__ = [
    "PREFIXES",
    "PREVIOUS_KINDS",
    "PREVIOUS_NAMES",
    "PREVIOUS_NAMESPACES",
    "SUFFIXES",
    "ResId",
    "add_prefix_suffix",
    "current_id",
    "fix_name_references",
    "is_cluster_scoped",
    "previous_ids",
    "set_namespace",
    "store_previous_id",
]

Obj = dict[str, Any]

_DOMAIN = "internal.config.kubernetes.io"
PREVIOUS_NAMES = f"{_DOMAIN}/previousNames"
PREVIOUS_NAMESPACES = f"{_DOMAIN}/previousNamespaces"
PREVIOUS_KINDS = f"{_DOMAIN}/previousKinds"
PREFIXES = f"{_DOMAIN}/prefixes"
SUFFIXES = f"{_DOMAIN}/suffixes"

_DEFAULT_NAMESPACE = "default"
_NOT_A_NAMESPACE = "_non_namespaceable_"

# kyaml's precomputed openapi scopes (Kubernetes 1.21 schema): the kinds it knows to be
# cluster-scoped, by apiVersion. Every other kind, CRDs' kinds included, is namespaced.
_CLUSTER_SCOPED = frozenset({
    *(("admissionregistration.k8s.io/" + v, k) for v in ("v1", "v1beta1")
      for k in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("apiextensions.k8s.io/v1beta1", "CustomResourceDefinition"),
    ("apiregistration.k8s.io/v1", "APIService"),
    ("apiregistration.k8s.io/v1beta1", "APIService"),
    ("certificates.k8s.io/v1", "CertificateSigningRequest"),
    ("certificates.k8s.io/v1beta1", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io/v1beta1", "PriorityLevelConfiguration"),
    ("networking.k8s.io/v1", "IngressClass"),
    ("networking.k8s.io/v1beta1", "IngressClass"),
    ("node.k8s.io/v1", "RuntimeClass"),
    ("node.k8s.io/v1beta1", "RuntimeClass"),
    ("policy/v1beta1", "PodSecurityPolicy"),
    *(("rbac.authorization.k8s.io/" + v, k) for v in ("v1", "v1beta1")
      for k in ("ClusterRole", "ClusterRoleBinding")),
    ("scheduling.k8s.io/v1", "PriorityClass"),
    ("scheduling.k8s.io/v1beta1", "PriorityClass"),
    *(("storage.k8s.io/" + v, k) for v in ("v1", "v1beta1")
      for k in ("CSIDriver", "CSINode", "StorageClass", "VolumeAttachment")),
    ("v1", "ComponentStatus"),
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "NodeProxyOptions"),
    ("v1", "PersistentVolume"),
})


def is_cluster_scoped(api_version: str, kind: str) -> bool:
    """Whether kustomize treats the kind as cluster-scoped (unknown kinds are not)."""
    return (api_version, kind) in _CLUSTER_SCOPED


@dataclass(frozen=True)
class _Gvk:
    group: str = ""
    version: str = ""
    kind: str = ""

    def selects(self, other: _Gvk) -> bool:
        """kustomize's Gvk.IsSelected with self as the selector: empty parts match all."""
        return ((not self.group or self.group == other.group)
                and (not self.version or self.version == other.version)
                and (not self.kind or self.kind == other.kind))


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, slash, version = api_version.partition("/")
    return (group, version) if slash else ("", api_version)


@dataclass(frozen=True)
class ResId:
    """An object's id as kustomize's resid.ResId: gvk, name, namespace as written."""

    group: str
    version: str
    kind: str
    name: str
    namespace: str
    # only a current id knows its scope; a previous id carries the stored namespace
    cluster_scoped: bool = False

    @property
    def gvk(self) -> _Gvk:
        return _Gvk(self.group, self.version, self.kind)

    @property
    def effective_namespace(self) -> str:
        if self.cluster_scoped:
            return _NOT_A_NAMESPACE
        if self.namespace in ("", _DEFAULT_NAMESPACE):
            return _DEFAULT_NAMESPACE
        return self.namespace


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Unsupported(f"{what} is not a string")
    return value


def _metadata(obj: Obj) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise Unsupported("object without metadata")
    return meta


def current_id(obj: Obj) -> ResId:
    """The object's current id (kustomize's CurId)."""
    api_version = _text(obj.get("apiVersion"), "apiVersion")
    kind = _text(obj.get("kind"), "kind")
    meta = _metadata(obj)
    name = _text(meta.get("name", ""), "metadata.name")
    namespace = meta.get("namespace")
    namespace = "" if namespace is None else _text(namespace, "metadata.namespace")
    group, version = _split_api_version(api_version)
    return ResId(group, version, kind, name, namespace,
                 is_cluster_scoped(api_version, kind))


def _annotations(obj: Obj, *, create: bool) -> dict[str, Any] | None:
    meta = _metadata(obj)
    annotations = meta.get("annotations")
    if annotations is None:
        if not create:
            return None
        annotations = meta["annotations"] = {}
    if not isinstance(annotations, dict):
        raise Unsupported("metadata.annotations is not a map")
    return annotations


def _csv(obj: Obj, key: str) -> list[str] | None:
    annotations = _annotations(obj, create=False)
    if not annotations or key not in annotations:
        return None
    return _text(annotations[key], key).split(",")


def _append_csv(obj: Obj, key: str, value: str) -> None:
    if value == "":
        return  # kustomize appends nothing for an empty value
    if "," in value:
        raise Unsupported(f"comma in a name, namespace or kind ({value!r})")
    annotations = _annotations(obj, create=True)
    assert annotations is not None
    old = annotations.get(key)
    annotations[key] = value if old is None else f"{_text(old, key)},{value}"


def previous_ids(obj: Obj) -> list[ResId]:
    """The ids the object had before each rename, oldest first (kustomize's PrevIds)."""
    names = _csv(obj, PREVIOUS_NAMES)
    if names is None:
        return []
    namespaces = _csv(obj, PREVIOUS_NAMESPACES) or [""]
    kinds = _csv(obj, PREVIOUS_KINDS) or [""]
    if not len(names) == len(namespaces) == len(kinds):
        raise Unsupported("previous names, namespaces and kinds differ in number")
    group, version = _split_api_version(_text(obj.get("apiVersion"), "apiVersion"))
    return [ResId(group, version, kind, name, namespace)
            for name, namespace, kind in zip(names, namespaces, kinds, strict=True)]


def _original_id(obj: Obj) -> ResId:
    ids = previous_ids(obj)
    return ids[0] if ids else current_id(obj)


def store_previous_id(obj: Obj) -> None:
    """Record the object's current id as a previous one; call before renaming it."""
    cur = current_id(obj)
    if not cur.name or not cur.kind:
        raise Unsupported("object without name or kind")
    _append_csv(obj, PREVIOUS_NAMES, cur.name)
    _append_csv(obj, PREVIOUS_NAMESPACES, cur.effective_namespace)
    _append_csv(obj, PREVIOUS_KINDS, cur.kind)


# --- field specs -----------------------------------------------------------------------

def _spec(path: str, kind: str = "", group: str = "", version: str = "",
          create: bool = False) -> FieldSpec:
    return FieldSpec(path, create, group, version, kind)


_METADATA_NAMESPACE = FieldSpec("metadata/namespace", create=True)


# --- namespace -------------------------------------------------------------------------

# builtinpluginconsts/namespace.go; metadata/namespace itself and RoleBinding subjects
# are hard-coded in the transformer, not driven by these
_NAMESPACE_SPECS = (
    _spec("metadata/name", kind="Namespace", create=True),
    _spec("spec/service/namespace", group="apiregistration.k8s.io", kind="APIService",
          create=True),
    _spec("spec/conversion/webhook/clientConfig/service/namespace",
          group="apiextensions.k8s.io", kind="CustomResourceDefinition"),
)
_SUBJECT_MODES = ("defaultOnly", "allServiceAccounts", "none")


def set_namespace(objects: Iterable[Obj], namespace: str, *, unset_only: bool = False,
                  role_binding_subjects: str = "defaultOnly") -> None:
    """kustomize's NamespaceTransformer with its default field specs.

    Sets ``metadata.namespace`` on every kind not known to be cluster-scoped, renames a
    ``v1`` Namespace to ``namespace``, sets APIService's and a CRD conversion webhook's
    service namespace and, per ``role_binding_subjects``, the namespace of
    (Cluster)RoleBinding subjects named ``default`` ("defaultOnly"), of every
    ServiceAccount subject ("allServiceAccounts") or of none ("none"). With
    ``unset_only`` only empty fields are set. Records each object's previous id.
    """
    if not namespace:
        return
    if role_binding_subjects == "":
        role_binding_subjects = "defaultOnly"
    if role_binding_subjects not in _SUBJECT_MODES:
        raise Unsupported(f"setRoleBindingSubjects {role_binding_subjects!r}")

    def setter(container: Any, key: Any) -> None:
        value = container[key]
        if isinstance(value, dict | list):
            raise Unsupported("namespace field spec targets a non-scalar")
        if unset_only:
            if value is None:
                raise Unsupported("unsetOnly over a null namespace")
            # kustomize tests the scalar's text: only an empty string counts as unset
            if not (isinstance(value, str) and value == ""):
                return
        container[key] = namespace

    objects = list(objects)
    for obj in objects:
        store_previous_id(obj)
        cur = current_id(obj)
        if not cur.cluster_scoped:
            if unset_only and (obj.get("metadata") or {}).get("namespace", "") is None:
                raise Unsupported("unsetOnly over a null namespace")
            walk(obj, _METADATA_NAMESPACE, setter, "scalar")
        if cur.kind in ("RoleBinding", "ClusterRoleBinding"):
            _set_subject_namespaces(obj, role_binding_subjects, setter)
        for spec in _NAMESPACE_SPECS:
            if spec.parts == ("metadata", "name") and obj["apiVersion"] != "v1":
                continue
            apply_field_spec(obj, spec, setter, "scalar")
    seen: set[tuple[str, str, str, str, str]] = set()
    for obj in objects:
        cur = current_id(obj)
        key = (cur.effective_namespace, cur.group, cur.version, cur.kind, cur.name)
        if key in seen:
            raise Unsupported("namespace transformation produces an ID conflict")
        seen.add(key)


def _set_subject_namespaces(obj: Obj, mode: str, setter: SetValue) -> None:
    subjects = obj.get("subjects")
    if mode == "none" or subjects is None:
        return
    if not isinstance(subjects, list):
        raise Unsupported("subjects is not a list")
    field, wanted = ("name", "default") if mode == "defaultOnly" else (
        "kind", "ServiceAccount")
    for subject in subjects:
        if not isinstance(subject, dict):
            raise Unsupported("a subject is not a map")
        value = subject.get(field)
        if isinstance(value, dict | list):
            raise Unsupported(f"subject {field} is not a scalar")
        if value != wanted:
            continue
        subject.setdefault("namespace", "")
        setter(subject, "namespace")


# --- prefix and suffix -----------------------------------------------------------------

# kinds the Prefix/SuffixTransformers never rename (plugin/builtin, hard-coded)
_NEVER_RENAMED = (
    _Gvk(kind="CustomResourceDefinition"),
    _Gvk(group="apiregistration.k8s.io", kind="APIService"),
    _Gvk(kind="Namespace"),
)


def add_prefix_suffix(objects: Iterable[Obj], prefix: str, suffix: str) -> None:
    """kustomize's PrefixTransformer then SuffixTransformer (default field spec
    ``metadata/name``): each renames every object but CRDs, APIServices and Namespaces
    (judged by their original kind), recording the prefix or suffix and the previous id.
    An empty prefix or suffix changes nothing."""
    objects = list(objects)
    for affix, key in ((prefix, PREFIXES), (suffix, SUFFIXES)):
        if not affix:
            continue
        for obj in objects:
            original = _original_id(obj).gvk
            if any(skip.selects(original) for skip in _NEVER_RENAMED):
                continue
            _append_csv(obj, key, affix)
            store_previous_id(obj)
            meta = _metadata(obj)
            name = _text(meta["name"], "metadata.name")
            meta["name"] = affix + name if key == PREFIXES else name + affix


# --- name references -------------------------------------------------------------------

def _pod_spec_refs(field_paths: Sequence[str]) -> list[FieldSpec]:
    """The same pod spec fields in Pod, PodTemplate and every workload kind."""
    out = [_spec(f"spec/{p}", kind="Pod", version="v1") for p in field_paths]
    out += [_spec(f"template/spec/{p}", kind="PodTemplate") for p in field_paths]
    for kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"):
        out += [_spec(f"spec/template/spec/{p}", kind=kind) for p in field_paths]
    return out


_CONFIGMAP_POD_FIELDS = (
    "volumes/configMap/name",
    "containers/env/valueFrom/configMapKeyRef/name",
    "initContainers/env/valueFrom/configMapKeyRef/name",
    "containers/envFrom/configMapRef/name",
    "initContainers/envFrom/configMapRef/name",
    "volumes/projected/sources/configMap/name",
)
_SECRET_POD_FIELDS = (
    "volumes/secret/secretName",
    "containers/env/valueFrom/secretKeyRef/name",
    "initContainers/env/valueFrom/secretKeyRef/name",
    "containers/envFrom/secretRef/name",
    "initContainers/envFrom/secretRef/name",
    "imagePullSecrets/name",
    "volumes/projected/sources/secret/name",
)
_CRONJOB = "spec/jobTemplate/spec/template/spec/"
_WORKLOADS = ("StatefulSet", "Deployment", "ReplicationController")
_SCHEDULED = ("Job", "DaemonSet")


def _workload_refs(pod_field: str) -> list[FieldSpec]:
    """One pod spec field in Pod and the workloads of kustomize's SA/PVC/priority lists."""
    return [_spec(f"spec/{pod_field}", kind="Pod"),
            *(_spec(f"spec/template/spec/{pod_field}", kind=k) for k in _WORKLOADS),
            _spec(_CRONJOB + pod_field, kind="CronJob"),
            *(_spec(f"spec/template/spec/{pod_field}", kind=k) for k in _SCHEDULED)]


_RBAC = "rbac.authorization.k8s.io"
_ADMISSION = "admissionregistration.k8s.io"

# builtinpluginconsts/namereference.go as kustomize v5.7.1 holds it, in the order its
# config loader sorts the referred kinds (legacy kind order, then by gvk string)
_NAME_REFERENCES: tuple[tuple[_Gvk, tuple[FieldSpec, ...]], ...] = (
    (_Gvk("storage.k8s.io", "v1", "StorageClass"), (
        _spec("spec/storageClassName", kind="PersistentVolume"),
        _spec("spec/storageClassName", kind="PersistentVolumeClaim"),
        _spec("spec/volumeClaimTemplates/spec/storageClassName", kind="StatefulSet"),
    )),
    (_Gvk("", "v1", "ServiceAccount"), (
        _spec("subjects", kind="RoleBinding", group=_RBAC),
        _spec("subjects", kind="ClusterRoleBinding", group=_RBAC),
        *_workload_refs("serviceAccountName"),
    )),
    (_Gvk(_RBAC, "", "Role"), (
        _spec("roleRef/name", kind="RoleBinding", group=_RBAC),
    )),
    (_Gvk(_RBAC, "", "ClusterRole"), (
        _spec("roleRef/name", kind="RoleBinding", group=_RBAC),
        _spec("roleRef/name", kind="ClusterRoleBinding", group=_RBAC),
    )),
    (_Gvk("", "v1", "ConfigMap"), (
        *_pod_spec_refs(_CONFIGMAP_POD_FIELDS),
        *(_spec(_CRONJOB + p, kind="CronJob") for p in (
            "volumes/configMap/name", "volumes/projected/sources/configMap/name",
            "containers/env/valueFrom/configMapKeyRef/name",
            "initContainers/env/valueFrom/configMapKeyRef/name",
            "containers/envFrom/configMapRef/name",
            "initContainers/envFrom/configMapRef/name")),
        _spec("spec/configSource/configMap", kind="Node"),
        _spec("rules/resourceNames", kind="Role"),
        _spec("rules/resourceNames", kind="ClusterRole"),
        _spec(r"metadata/annotations/nginx.ingress.kubernetes.io\/fastcgi-params-configmap",
              kind="Ingress"),
    )),
    (_Gvk("", "v1", "Secret"), (
        *_pod_spec_refs(_SECRET_POD_FIELDS),
        *(_spec(_CRONJOB + p, kind="CronJob") for p in (
            "volumes/secret/secretName", "volumes/projected/sources/secret/name",
            "containers/env/valueFrom/secretKeyRef/name",
            "initContainers/env/valueFrom/secretKeyRef/name",
            "containers/envFrom/secretRef/name", "initContainers/envFrom/secretRef/name",
            "imagePullSecrets/name")),
        _spec("spec/tls/secretName", kind="Ingress"),
        _spec(r"metadata/annotations/ingress.kubernetes.io\/auth-secret", kind="Ingress"),
        _spec(r"metadata/annotations/nginx.ingress.kubernetes.io\/auth-secret",
              kind="Ingress"),
        _spec(r"metadata/annotations/nginx.ingress.kubernetes.io\/auth-tls-secret",
              kind="Ingress"),
        _spec("spec/tls/secretName", kind="Ingress"),  # listed twice upstream
        _spec("imagePullSecrets/name", kind="ServiceAccount"),
        *(_spec(f"parameters/{p}", kind="StorageClass")
          for p in ("secretName", "adminSecretName", "userSecretName", "secretRef")),
        _spec("rules/resourceNames", kind="Role"),
        _spec("rules/resourceNames", kind="ClusterRole"),
        _spec("spec/template/spec/containers/env/valueFrom/secretKeyRef/name",
              kind="Service", group="serving.knative.dev", version="v1"),
        _spec("spec/azureFile/secretName", kind="PersistentVolume"),
    )),
    (_Gvk("", "v1", "Service"), (
        _spec("spec/serviceName", kind="StatefulSet", group="apps"),
        _spec("spec/rules/http/paths/backend/serviceName", kind="Ingress"),
        _spec("spec/backend/serviceName", kind="Ingress"),
        _spec("spec/rules/http/paths/backend/service/name", kind="Ingress"),
        _spec("spec/defaultBackend/service/name", kind="Ingress"),
        _spec("spec/service/name", kind="APIService", group="apiregistration.k8s.io"),
        _spec("webhooks/clientConfig/service", kind="ValidatingWebhookConfiguration",
              group=_ADMISSION),
        _spec("webhooks/clientConfig/service", kind="MutatingWebhookConfiguration",
              group=_ADMISSION),
    )),
    (_Gvk("scheduling.k8s.io", "v1", "PriorityClass"), tuple(
        _workload_refs("priorityClassName"))),
    (_Gvk("", "v1", "PersistentVolume"), (
        _spec("spec/volumeName", kind="PersistentVolumeClaim"),
        _spec("rules/resourceNames", kind="ClusterRole"),
    )),
    (_Gvk("", "v1", "PersistentVolumeClaim"), tuple(
        _workload_refs("volumes/persistentVolumeClaim/claimName"))),
    (_Gvk("", "", "Deployment"), (
        _spec("spec/scaleTargetRef/name", kind="HorizontalPodAutoscaler"),)),
    (_Gvk("", "", "StatefulSet"), (
        _spec("spec/scaleTargetRef/name", kind="HorizontalPodAutoscaler"),)),
    (_Gvk(_ADMISSION, "", "ValidatingAdmissionPolicy"), (
        _spec("spec/policyName", kind="ValidatingAdmissionPolicyBinding",
              group=_ADMISSION),)),
    # the group is written "networking.k8s.io/v1" upstream, so no IngressClass matches
    (_Gvk("networking.k8s.io/v1", "v1", "IngressClass"), (
        _spec("spec/ingressClassName", kind="Ingress"),)),
    (_Gvk("", "", "ReplicaSet"), (
        _spec("spec/scaleTargetRef/name", kind="HorizontalPodAutoscaler"),)),
    (_Gvk("", "", "ReplicationController"), (
        _spec("spec/scaleTargetRef/name", kind="HorizontalPodAutoscaler"),)),
)


@dataclass
class _Candidate:
    """A possible referral target, with what the selection reads from it."""

    obj: Obj
    cur: ResId
    previous: list[ResId]
    prefixes: list[str]
    suffixes: list[str]


def _candidate(obj: Obj) -> _Candidate:
    return _Candidate(obj, current_id(obj), previous_ids(obj), _csv(obj, PREFIXES) or [],
                      _csv(obj, SUFFIXES) or [])


def _same_ending(a: list[str], b: list[str]) -> bool:
    """kustomize's SameEndingSubSlice: the shorter list ends the longer one; an empty
    list only matches an empty one."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if not short:
        return not long
    return long[len(long) - len(short):] == short


def _affixes_equal(c: _Candidate, r: _Candidate, allow_empty: bool) -> bool:
    prefixes = _same_ending(c.prefixes, r.prefixes)
    suffixes = _same_ending(c.suffixes, r.suffixes)
    if allow_empty:
        prefixes = prefixes or not c.prefixes or not r.prefixes
        suffixes = suffixes or not c.suffixes or not r.suffixes
    return prefixes and suffixes


def _visibility(referrer: _Candidate) -> Callable[[_Candidate], bool]:
    """Whether kustomize's SubsetThatCouldBeReferencedByResource holds an object."""
    if referrer.cur.cluster_scoped:
        return lambda c: True
    sa_namespaces: set[str] = set()
    subjects = referrer.obj.get("subjects")
    if referrer.cur.kind == "RoleBinding" and isinstance(subjects, list):
        for subject in subjects:
            if not isinstance(subject, dict):
                raise Unsupported("a subject is not a map")
            if "namespace" in subject and subject.get("kind") == "ServiceAccount":
                sa_namespaces.add(_text(subject["namespace"], "subject namespace"))
    namespace = referrer.cur.effective_namespace
    return lambda c: (c.cur.cluster_scoped or c.cur.effective_namespace == namespace
                      or c.cur.namespace in sa_namespaces)


def _original_namespace(c: _Candidate) -> str:
    return (c.previous[0] if c.previous else c.cur).effective_namespace


@dataclass
class _Referrer:
    """One object whose name references are being fixed, among all the objects."""

    me: _Candidate
    everything: list[_Candidate]
    # objects by each name they had before, in build order
    by_previous_name: dict[str, list[_Candidate]]
    visible: Callable[[_Candidate], bool]
    _original_namespaces: set[str] | None = None

    def original_namespaces(self) -> set[str]:
        """The original (effective) namespaces of the objects visible from here."""
        if self._original_namespaces is None:
            self._original_namespaces = {
                _original_namespace(c) for c in self.everything if self.visible(c)}
        return self._original_namespaces


@dataclass
class _Reference:
    """One field spec of one referrer: resolves names to objects of the target kind."""

    referrer: _Referrer
    target: _Gvk
    path: tuple[str, ...]

    def select(self, old: str, pool: Callable[[_Candidate], bool],
               same: Callable[[_Candidate, _Candidate], bool]) -> _Candidate | None:
        """kustomize's selectReferral: narrow the objects once named ``old`` down to
        one, or to several that would write the same; None when none is left."""
        me = self.referrer.me
        found = [c for c in self.referrer.by_previous_name.get(old, ())
                 if self.referrer.visible(c) and pool(c)]
        found = [c for c in found if any(self.target.selects(p.gvk) for p in c.previous)]
        role = self._role_ref_gvk()
        if role is not None:
            found = [c for c in found if any(role.selects(p.gvk) for p in c.previous)]
        if not me.cur.cluster_scoped:
            found = [c for c in found
                     if c.cur.cluster_scoped or c.cur.kind == "ServiceAccount"
                     or c.cur.effective_namespace == me.cur.effective_namespace]
        if len(found) == 1:
            return found[0]
        for allow_empty in (True, False):
            found = [c for c in found if _affixes_equal(c, me, allow_empty)]
            if len(found) == 1:
                return found[0]
        if not found:
            return None
        if all(same(found[0], c) for c in found[1:]):
            return found[0]
        raise Unsupported(f"more than one object the name {old!r} may refer to")

    def _role_ref_gvk(self) -> _Gvk | None:
        if self.path[-2:] != ("roleRef", "name"):
            return None
        role_ref = self.referrer.me.obj.get("roleRef")
        if not isinstance(role_ref, dict):
            # kustomize fails to read it and lets every candidate through
            if role_ref is not None:
                raise Unsupported("roleRef is not a map")
            return None
        if "apiGroup" not in role_ref or "kind" not in role_ref:
            return None
        group, kind = role_ref["apiGroup"], role_ref["kind"]
        return _Gvk(group=_text(group, "roleRef.apiGroup"), kind=_text(kind, "roleRef.kind"))

    def set(self, container: Any, key: Any) -> None:
        node = container[key]
        if node is None:
            return
        if isinstance(node, list):
            for index, element in enumerate(node):
                if isinstance(element, dict):
                    self._set_mapping(element)
                elif isinstance(element, list) or element is None:
                    raise Unsupported("a name reference list holds a list or null")
                else:
                    self._set_scalar(node, index)
        elif isinstance(node, dict):
            self._set_mapping(node)
        else:
            self._set_scalar(container, key)

    def _set_scalar(self, container: Any, key: Any) -> None:
        old = container[key]
        if not isinstance(old, str):
            raise Unsupported("a name reference is not a string")
        referral = self.select(old, lambda c: True, lambda a, b: a.cur.name == b.cur.name)
        if referral is not None and referral.cur.name != old:
            container[key] = referral.cur.name

    def _set_mapping(self, node: dict[str, Any]) -> None:
        if "name" not in node:
            raise Unsupported("a name reference map has no name")
        old = _text(node["name"], "referenced name")
        pool: Callable[[_Candidate], bool] = lambda c: True  # noqa: E731
        if "namespace" in node:
            namespace = _text(node["namespace"], "referenced namespace")
            # objects by original namespace if any visible one had it, else by current
            # one; kustomize leaves the cluster-scoped out of both groupings
            if namespace == _NOT_A_NAMESPACE:
                return
            if namespace in self.referrer.original_namespaces():
                pool = lambda c: _original_namespace(c) == namespace  # noqa: E731
            else:
                pool = lambda c: c.cur.effective_namespace == namespace  # noqa: E731
        referral = self.select(
            old, pool,
            lambda a, b: (a.cur.name, a.cur.namespace) == (b.cur.name, b.cur.namespace))
        if referral is None:
            return
        if referral.cur.name == old and referral.cur.namespace == "":
            return
        node["name"] = referral.cur.name
        if referral.cur.namespace:
            node["namespace"] = referral.cur.namespace


def fix_name_references(objects: Iterable[Obj]) -> None:
    """kustomize's name-reference transformer with its default configuration: every
    field that names a ConfigMap, Secret, ServiceAccount, Service, Role, ClusterRole,
    PVC, PV, StorageClass, PriorityClass, workload (HPA) or admission policy by a
    previous name of a visible object of that kind gets the object's current name (and,
    for ``{name, namespace}`` references, its namespace)."""
    everything = [_candidate(obj) for obj in objects]
    by_previous_name: dict[str, list[_Candidate]] = {}
    for c in everything:
        for name in dict.fromkeys(p.name for p in c.previous):
            by_previous_name.setdefault(name, []).append(c)
    if not by_previous_name:
        return  # only a renamed object is ever referred to by a new name
    for me in everything:
        original = me.previous[0].gvk if me.previous else me.cur.gvk
        referrer: _Referrer | None = None
        for target, specs in _NAME_REFERENCES:
            for spec in specs:
                if not spec.selects(original.group, original.version, original.kind):
                    continue
                if referrer is None:
                    referrer = _Referrer(me, everything, by_previous_name, _visibility(me))
                reference = _Reference(referrer, target, spec.parts)
                walk(me.obj, spec, reference.set, None)
