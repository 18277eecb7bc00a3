"""Namespace, prefix/suffix and name references are held equal to ``kubectl kustomize``.

Each case is a small tree of kustomizations; the same tree goes through the real
kustomize and through fluxd's functions called level by level as the engine calls them
(namespace, then prefix, then suffix in each kustomization; name references once at the
end), and the objects must come out the same.
"""

from __future__ import annotations

import copy
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.controllers.kustomize.native import sort_key
from fluxd.kustomize.identity import (
    add_prefix_suffix,
    current_id,
    fix_name_references,
    set_namespace,
)
from fluxd.kustomize.kyaml import Unsupported, load_documents
from tests.conftest import tool

Obj = dict[str, Any]
_BUILD_ANNOTATIONS = "internal.config.kubernetes.io/"


@dataclass
class Level:
    """One kustomization: its own manifests, bases (other levels) and identity fields."""

    manifests: list[str] = field(default_factory=list)
    bases: list[Level] = field(default_factory=list)
    namespace: str = ""
    prefix: str = ""
    suffix: str = ""
    # a NamespaceTransformer in ``transformers:`` (runs after the fields above):
    # namespace, unsetOnly, setRoleBindingSubjects
    transformer: tuple[str, bool, str] | None = None


# the default namespace field specs, spelled out: a transformer config without any
# gets none (only the hard-coded metadata.namespace and subjects)
_NAMESPACE_FIELD_SPECS = [
    {"path": "metadata/name", "kind": "Namespace", "create": True},
    {"path": "spec/service/namespace", "group": "apiregistration.k8s.io",
     "kind": "APIService", "create": True},
    {"path": "spec/conversion/webhook/clientConfig/service/namespace",
     "group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition"},
]


def _write(level: Level, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    resources: list[str] = []
    if level.manifests:
        (directory / "objects.yaml").write_text("\n---\n".join(level.manifests))
        resources.append("objects.yaml")
    for index, base in enumerate(level.bases):
        _write(base, directory / f"base{index}")
        resources.append(f"base{index}")
    kustomization: dict[str, Any] = {"resources": resources}
    if level.namespace:
        kustomization["namespace"] = level.namespace
    if level.prefix:
        kustomization["namePrefix"] = level.prefix
    if level.suffix:
        kustomization["nameSuffix"] = level.suffix
    if level.transformer:
        namespace, unset_only, subjects = level.transformer
        (directory / "namespace.yaml").write_text(yaml.safe_dump({
            "apiVersion": "builtin", "kind": "NamespaceTransformer",
            "metadata": {"name": "ns", "namespace": namespace},
            "unsetOnly": unset_only, "setRoleBindingSubjects": subjects,
            "fieldSpecs": _NAMESPACE_FIELD_SPECS}))
        kustomization["transformers"] = ["namespace.yaml"]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))


def kustomize(level: Level) -> list[Obj] | str:
    """The real build's objects, or its error message."""
    with tempfile.TemporaryDirectory() as tmp:
        _write(level, Path(tmp) / "root")
        run = subprocess.run([tool("kubectl"), "kustomize", str(Path(tmp) / "root")],
                             capture_output=True, text=True, timeout=30, check=False)
    if run.returncode:
        return run.stderr
    return sorted(load_documents(run.stdout.encode()), key=sort_key)


def _accumulate(level: Level) -> list[Obj]:
    objects = [obj for text in level.manifests for obj in load_documents(text.encode())]
    for base in level.bases:
        objects += _accumulate(base)
    # two objects with one id is the engine's error to report (kustomize's resmap)
    ids = [(i.effective_namespace, i.group, i.version, i.kind, i.name)
           for i in map(current_id, objects)]
    if len(set(ids)) != len(ids):
        raise Unsupported("two objects with one id")
    set_namespace(objects, level.namespace)
    add_prefix_suffix(objects, level.prefix, level.suffix)
    if level.transformer:
        namespace, unset_only, subjects = level.transformer
        set_namespace(objects, namespace, unset_only=unset_only,
                      role_binding_subjects=subjects)
    return objects


def native(level: Level) -> list[Obj]:
    objects = _accumulate(level)
    fix_name_references(objects)
    for obj in objects:
        annotations = obj["metadata"].get("annotations", {})
        for key in [k for k in annotations if k.startswith(_BUILD_ANNOTATIONS)]:
            del annotations[key]
        if "annotations" in obj["metadata"] and not annotations:
            del obj["metadata"]["annotations"]
    return sorted(objects, key=sort_key)


def assert_same_as_kustomize(level: Level) -> None:
    expected = kustomize(level)
    if isinstance(expected, str):
        with pytest.raises(Unsupported):
            native(copy.deepcopy(level))
        return
    assert native(copy.deepcopy(level)) == expected


def doc(api_version: str, kind: str, name: str, namespace: str = "", body: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    return f"apiVersion: {api_version}\nkind: {kind}\n{meta}{body}"


DEPLOYMENT_BODY = """spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: %(sa)s
      imagePullSecrets: [{name: %(secret)s}]
      containers:
      - name: web
        image: nginx
        envFrom: [{configMapRef: {name: %(cm)s}}, {secretRef: {name: %(secret)s}}]
        env:
        - name: A
          valueFrom: {configMapKeyRef: {name: %(cm)s, key: a}}
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: %(pvc)s}
      - name: config
        configMap: {name: %(cm)s}
      - name: both
        projected:
          sources: [{configMap: {name: %(cm)s}}, {secret: {name: %(secret)s}}]
"""


def deployment(name: str = "web", *, cm: str = "config", secret: str = "creds",
               sa: str = "runner", pvc: str = "data", namespace: str = "") -> str:
    body = DEPLOYMENT_BODY % {"cm": cm, "secret": secret, "sa": sa, "pvc": pvc}
    return doc("apps/v1", "Deployment", name, namespace, body)


def role_binding(kind: str, name: str, role_kind: str, role: str,
                 subjects: list[tuple[str, str, str]], namespace: str = "") -> str:
    lines = [f"roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {role_kind}, "
             f"name: {role}}}", "subjects:"]
    for subject_kind, subject_name, subject_namespace in subjects:
        entry = f"- {{kind: {subject_kind}, name: {subject_name}"
        entry += f", namespace: {subject_namespace}}}" if subject_namespace else "}"
        lines.append(entry)
    return doc("rbac.authorization.k8s.io/v1", kind, name, namespace,
               "\n".join(lines) + "\n")


def webhook(kind: str, service: str, namespace: str = "") -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return doc("admissionregistration.k8s.io/v1", kind, "hooks", body=f"""webhooks:
- name: a.example.com
  sideEffects: None
  admissionReviewVersions: [v1]
  clientConfig:
    service: {{name: {service}{ns}, path: /validate}}
""")


APISERVICE = doc("apiregistration.k8s.io/v1", "APIService", "v1beta1.metrics.k8s.io", body="""spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: metrics, namespace: kube-system}
""")
INGRESS = doc("networking.k8s.io/v1", "Ingress", "web", body="""spec:
  ingressClassName: nginx
  defaultBackend: {service: {name: web, port: {number: 80}}}
  tls: [{hosts: [a.example.com], secretName: creds}]
  rules:
  - host: a.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
""")
CRD = doc("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com",
          body="""spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true}]
  conversion:
    strategy: Webhook
    webhook:
      conversionReviewVersions: [v1]
      clientConfig: {service: {name: convert, namespace: system, path: /convert}}
""")


def app_objects(namespace: str = "") -> list[str]:
    return [
        deployment(namespace=namespace),
        doc("v1", "ConfigMap", "config", namespace, "data: {a: b}\n"),
        doc("v1", "Secret", "creds", namespace, "stringData: {a: b}\n"),
        doc("v1", "ServiceAccount", "runner", namespace),
        doc("v1", "PersistentVolumeClaim", "data", namespace,
            "spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n"),
        doc("v1", "Service", "web", namespace, "spec: {ports: [{port: 80}]}\n"),
        INGRESS.replace("name: web\n", f"name: web\n  namespace: {namespace}\n", 1)
        if namespace else INGRESS,
    ]


# ----------------------------------------------------------------------- namespace


def test_namespace_is_set_on_namespaced_kinds_and_not_on_cluster_scoped_ones() -> None:
    assert_same_as_kustomize(Level(namespace="apps", manifests=[
        doc("v1", "ConfigMap", "a"), doc("v1", "ConfigMap", "b", "other"),
        doc("example.com/v1", "Widget", "w"), doc("v1", "Namespace", "old"),
        doc("rbac.authorization.k8s.io/v1", "ClusterRole", "reader"),
        doc("storage.k8s.io/v1", "StorageClass", "fast"), CRD,
        doc("v1", "PersistentVolume", "pv", body="spec: {capacity: {storage: 1Gi}}\n"),
    ]))


def test_kinds_kustomize_does_not_know_are_namespaced_even_newer_cluster_ones() -> None:
    assert_same_as_kustomize(Level(namespace="apps", manifests=[
        doc("flowcontrol.apiserver.k8s.io/v1", "FlowSchema", "fs"),
        doc("flowcontrol.apiserver.k8s.io/v1beta1", "FlowSchema", "fs"),
        doc("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "vap"),
        doc("rbac.authorization.k8s.io/v1alpha1", "ClusterRole", "cr"),
        doc("scheduling.k8s.io/v1alpha1", "PriorityClass", "pc"),
        doc("node.k8s.io/v1alpha1", "RuntimeClass", "rc"),
        doc("node.k8s.io/v1", "RuntimeClass", "rc"),
        doc("storage.k8s.io/v1", "CSIStorageCapacity", "cap"),
        doc("storage.k8s.io/v1beta1", "CSIStorageCapacity", "cap"),
        doc("policy/v1beta1", "PodSecurityPolicy", "psp"),
        doc("v1", "ComponentStatus", "cs"), doc("v1", "Node", "n"),
        doc("networking.k8s.io/v1beta1", "IngressClass", "ic"),
        doc("certificates.k8s.io/v1", "CertificateSigningRequest", "csr"),
        doc("admissionregistration.k8s.io/v1beta1", "MutatingWebhookConfiguration", "m"),
        doc("storage.k8s.io/v1beta1", "VolumeAttachment", "va"),
    ]))


def test_role_binding_subjects_get_the_namespace_only_when_named_default() -> None:
    subjects = [("ServiceAccount", "default", ""), ("ServiceAccount", "runner", ""),
                ("ServiceAccount", "default", "elsewhere"), ("User", "default", ""),
                ("ServiceAccount", "my-default", ""), ("Group", "devs", "")]
    assert_same_as_kustomize(Level(namespace="apps", manifests=[
        role_binding("RoleBinding", "rb", "Role", "r", subjects),
        role_binding("ClusterRoleBinding", "crb", "ClusterRole", "cr", subjects),
    ]))


def test_webhook_and_apiservice_service_references_follow_the_service() -> None:
    assert_same_as_kustomize(Level(namespace="system", prefix="p-", manifests=[
        webhook("ValidatingWebhookConfiguration", "hooks-svc", "other"),
        webhook("MutatingWebhookConfiguration", "hooks-svc"),
        doc("v1", "Service", "hooks-svc", body="spec: {ports: [{port: 443}]}\n"),
        doc("v1", "Service", "metrics", "kube-system", "spec: {ports: [{port: 443}]}\n"),
        APISERVICE, CRD,
    ]))


def test_an_apiservice_without_a_service_gets_one_with_the_namespace() -> None:
    local = doc("apiregistration.k8s.io/v1", "APIService", "v1.example.com",
                body="spec: {group: example.com, version: v1}\n")
    null = doc("apiregistration.k8s.io/v1", "APIService", "v2.example.com",
               body="spec: {group: example.com, version: v2, service: null}\n")
    assert_same_as_kustomize(Level(namespace="system", manifests=[local, null]))


def test_a_namespace_of_another_group_is_namespaced_and_not_renamed() -> None:
    assert_same_as_kustomize(Level(namespace="apps", prefix="p-", manifests=[
        doc("example.com/v1", "Namespace", "tenant"), doc("v1", "Namespace", "real")]))


def test_unset_only_keeps_namespaces_and_all_service_accounts_mode() -> None:
    subjects = [("ServiceAccount", "default", ""), ("ServiceAccount", "runner", "kept"),
                ("ServiceAccount", "runner", ""), ("User", "alice", "")]
    manifests = [doc("v1", "ConfigMap", "a"), doc("v1", "ConfigMap", "b", "kept"),
                 role_binding("RoleBinding", "rb", "Role", "r", subjects),
                 role_binding("ClusterRoleBinding", "crb", "ClusterRole", "r", subjects)]
    for unset_only in (True, False):
        for mode in ("allServiceAccounts", "none", "defaultOnly"):
            assert_same_as_kustomize(Level(manifests=manifests,
                                           transformer=("apps", unset_only, mode)))


# ----------------------------------------------------------------------- prefix/suffix


def test_prefix_and_suffix_rename_objects_and_the_references_to_them() -> None:
    assert_same_as_kustomize(Level(prefix="team-", suffix="-v2", manifests=[
        *app_objects(),
        role_binding("RoleBinding", "rb", "Role", "r", [("ServiceAccount", "runner", "")]),
        doc("rbac.authorization.k8s.io/v1", "Role", "r", body="rules: []\n"),
        CRD, doc("v1", "Namespace", "ns"), APISERVICE,
        doc("networking.k8s.io/v1", "IngressClass", "nginx", body="spec: {}\n"),
    ]))


def test_the_rarer_reference_fields_follow_renames() -> None:
    pod_spec = DEPLOYMENT_BODY.split("    spec:\n", 1)[1] % {
        "cm": "config", "secret": "creds", "sa": "runner", "pvc": "data"}
    unindented = "\n".join(line[4:] for line in pod_spec.splitlines())
    assert_same_as_kustomize(Level(prefix="p-", suffix="-s", manifests=[
        *app_objects(),
        doc("v1", "Pod", "pod", body="spec:\n" + "\n".join(
            "  " + line for line in unindented.splitlines()) + "\n"),
        doc("v1", "PodTemplate", "tpl", body="template:\n  spec:\n" + "\n".join(
            "    " + line for line in unindented.splitlines()) + "\n"),
        doc("v1", "Node", "node", body="spec: {configSource: {configMap: "
            "{name: config, namespace: default, kubeletConfigKey: k}}}\n"),
        doc("v1", "ServiceAccount", "puller", body="imagePullSecrets: [{name: creds}]\n"),
        doc("storage.k8s.io/v1", "StorageClass", "fast", body="provisioner: x\n"
            "parameters: {secretName: creds, adminSecretName: creds, secretRef: creds}\n"),
        doc("v1", "PersistentVolume", "pv", body="spec: {storageClassName: fast, "
            "azureFile: {secretName: creds, shareName: s}}\n"),
        doc("v1", "PersistentVolumeClaim", "claim", body="spec: {volumeName: pv, "
            "storageClassName: fast}\n"),
        doc("scheduling.k8s.io/v1", "PriorityClass", "high", body="value: 10\n"),
        doc("networking.k8s.io/v1", "Ingress", "annotated", body="", ).replace(
            "name: annotated\n", "name: annotated\n  annotations:\n"
            "    nginx.ingress.kubernetes.io/auth-secret: creds\n"
            "    nginx.ingress.kubernetes.io/fastcgi-params-configmap: config\n"),
        doc("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "policy",
            body="spec: {validations: [{expression: 'true'}]}\n"),
        doc("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "bind",
            body="spec: {policyName: policy, validationActions: [Deny]}\n"),
        doc("serving.knative.dev/v1", "Service", "knative", body="spec:\n  template:\n"
            "    spec:\n      containers:\n      - env:\n        - name: A\n"
            "          valueFrom: {secretKeyRef: {name: creds, key: a}}\n"),
        doc("autoscaling/v2", "HorizontalPodAutoscaler", "hpa", body="spec: "
            "{scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}}\n"),
    ]))


def test_two_levels_of_prefixes_and_namespaces() -> None:
    base = Level(prefix="base-", namespace="one", manifests=app_objects())
    assert_same_as_kustomize(Level(prefix="top-", suffix="-x", namespace="two",
                                   bases=[base]))


def test_a_reference_prefers_the_target_renamed_in_its_own_context() -> None:
    first = Level(prefix="a-", manifests=[doc("v1", "ConfigMap", "config"),
                                         deployment("first")])
    second = Level(prefix="b-", manifests=[doc("v1", "ConfigMap", "config"),
                                          deployment("second")])
    assert_same_as_kustomize(Level(bases=[first, second],
                                   manifests=[deployment("third")]))


def test_an_unprefixed_target_is_preferred_over_a_differently_prefixed_one() -> None:
    unprefixed = Level(suffix="-s", manifests=[doc("v1", "ConfigMap", "config")])
    other = Level(prefix="b-", manifests=[doc("v1", "ConfigMap", "config")])
    referrer = Level(prefix="a-", manifests=[deployment("web")])
    assert_same_as_kustomize(Level(bases=[unprefixed, other, referrer]))


def test_an_ambiguous_reference_is_left_to_kustomize() -> None:
    first = Level(namespace="one", manifests=[doc("v1", "ServiceAccount", "runner")])
    second = Level(namespace="two", manifests=[doc("v1", "ServiceAccount", "runner")])
    level = Level(bases=[first, second], prefix="p-", manifests=[role_binding(
        "ClusterRoleBinding", "crb", "ClusterRole", "view", [("ServiceAccount", "runner", "")])])
    assert isinstance(kustomize(level), str)
    with pytest.raises(Unsupported):
        native(level)


def test_a_role_binding_sees_service_accounts_of_other_namespaces() -> None:
    accounts = Level(namespace="other", prefix="x-",
                     manifests=[doc("v1", "ServiceAccount", "runner"),
                                doc("v1", "ConfigMap", "config")])
    assert_same_as_kustomize(Level(bases=[accounts], namespace="apps", manifests=[
        role_binding("RoleBinding", "rb", "ClusterRole", "view",
                     [("ServiceAccount", "runner", "other")]),
        role_binding("ClusterRoleBinding", "crb", "ClusterRole", "view",
                     [("ServiceAccount", "runner", "other"), ("ServiceAccount", "runner", "")]),
        deployment("web"),
    ]))


# ----------------------------------------------------------------------- generated

_NAMES = st.sampled_from(["config", "creds", "runner", "data", "web", "default"])
_NAMESPACES = st.sampled_from(["", "", "apps", "default", "other"])
_RBAC = "rbac.authorization.k8s.io/v1"


def _pod_refs(draw: st.DrawFn) -> str:
    """A pod spec (indented for a template) naming drawn objects."""
    return DEPLOYMENT_BODY.split("    spec:\n", 1)[1] % {
        "cm": draw(_NAMES), "secret": draw(_NAMES), "sa": draw(_NAMES),
        "pvc": draw(_NAMES)} + f"      priorityClassName: {draw(_NAMES)}\n"


def _object(draw: st.DrawFn, choice: str, name: str, namespace: str) -> tuple[str, str]:
    """(kind, manifest) of one drawn object."""
    names = _NAMES
    if choice in ("ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim",
                  "Service"):
        body = ""
        if choice == "PersistentVolumeClaim":
            body = (f"spec: {{volumeName: {draw(names)}, "
                    f"storageClassName: {draw(names)}}}\n")
        return choice, doc("v1", choice, name, namespace, body)
    if choice == "Deployment":
        return choice, deployment(name, cm=draw(names), secret=draw(names), sa=draw(names),
                                  pvc=draw(names), namespace=namespace)
    if choice == "StatefulSet":
        return choice, doc("apps/v1", choice, name, namespace, f"""spec:
  serviceName: {draw(names)}
  volumeClaimTemplates: [{{metadata: {{name: d}}, spec: {{storageClassName: {draw(names)}}}}}]
  template:
    spec:
{_pod_refs(draw)}""")
    if choice == "CronJob":
        pod = "\n".join("    " + line for line in _pod_refs(draw).splitlines())
        return choice, doc("batch/v1", choice, name, namespace, f"""spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        spec:
{pod}
""")
    if choice == "HorizontalPodAutoscaler":
        target = draw(st.sampled_from(["Deployment", "StatefulSet"]))
        return choice, doc("autoscaling/v2", choice, name, namespace, f"""spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: {target}, name: {draw(names)}}}
""")
    if choice in ("Role", "ClusterRole"):
        body = (f"rules: [{{apiGroups: [''], resources: [configmaps, secrets], "
                f"resourceNames: [{draw(names)}, {draw(names)}]}}]\n")
        return choice, doc(_RBAC, choice, name, namespace if choice == "Role" else "", body)
    if choice in ("RoleBinding", "ClusterRoleBinding"):
        subjects = [(draw(st.sampled_from(["ServiceAccount", "User"])), draw(names),
                     draw(_NAMESPACES)) for _ in range(draw(st.integers(0, 3)))]
        role_kind = draw(st.sampled_from(["Role", "ClusterRole"]))
        return choice, role_binding(choice, name, role_kind, draw(names), subjects,
                                    namespace if choice == "RoleBinding" else "")
    if choice in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        return choice, webhook(choice, draw(names), draw(_NAMESPACES)).replace(
            "name: hooks", f"name: {name}", 1)
    if choice == "Ingress":
        return choice, doc("networking.k8s.io/v1", choice, name, namespace, f"""spec:
  defaultBackend: {{service: {{name: {draw(names)}, port: {{number: 80}}}}}}
  tls: [{{secretName: {draw(names)}}}]
""")
    if choice == "APIService":
        service_ns = draw(_NAMESPACES)
        ns = f", namespace: {service_ns}" if service_ns else ""
        return choice, doc("apiregistration.k8s.io/v1", choice, f"v1.{name}.example.com",
                           body=f"spec: {{service: {{name: {draw(names)}{ns}}}}}\n")
    if choice == "PriorityClass":
        return choice, doc("scheduling.k8s.io/v1", choice, name, body="value: 10\n")
    if choice == "StorageClass":
        return choice, doc("storage.k8s.io/v1", choice, name,
                           body=f"provisioner: x\nparameters: {{secretName: {draw(names)}}}\n")
    if choice == "PersistentVolume":
        return choice, doc("v1", choice, name, body=f"spec: {{storageClassName: {draw(names)}}}\n")
    return choice, doc("v1", "Namespace", name)


_CHOICES = st.sampled_from([
    "ConfigMap", "Secret", "ServiceAccount", "PersistentVolumeClaim", "Service",
    "Deployment", "StatefulSet", "CronJob", "HorizontalPodAutoscaler", "Role",
    "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration", "Ingress", "APIService", "PriorityClass",
    "StorageClass", "PersistentVolume", "Namespace"])


@st.composite
def objects(draw: st.DrawFn) -> list[str]:
    out: dict[tuple[str, str, str], str] = {}
    for _ in range(draw(st.integers(1, 7))):
        name, namespace = draw(_NAMES), draw(_NAMESPACES)
        kind, text = _object(draw, draw(_CHOICES), name, namespace)
        out.setdefault((kind, name, namespace or "default"), text)
    return list(out.values())


@st.composite
def levels(draw: st.DrawFn, depth: int = 0) -> Level:
    level = Level(
        manifests=draw(objects()) if depth or draw(st.booleans()) else [],
        namespace=draw(st.sampled_from(["", "", "apps", "other"])),
        prefix=draw(st.sampled_from(["", "p-", "q-"])),
        suffix=draw(st.sampled_from(["", "", "-s"])),
    )
    if draw(st.integers(0, 4)) == 0:
        level.transformer = (draw(st.sampled_from(["apps", "third"])), draw(st.booleans()),
                             draw(st.sampled_from(["defaultOnly", "allServiceAccounts",
                                                   "none"])))
    if depth < 2:
        level.bases = [draw(levels(depth=depth + 1))
                       for _ in range(draw(st.integers(0 if level.manifests else 1, 2)))]
    return level


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(levels())
def test_generated_trees_build_as_kustomize_builds_them(level: Level) -> None:
    assert_same_as_kustomize(level)
