"""The native kustomize build is held equal to ``kubectl kustomize`` on the same tree, run
the way Flux runs it (its kustomization generated or merged, ``LoadRestrictionsNone``),
and gives way (``Unsupported``) for what it does not reproduce."""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.controllers.kustomize import build as flux
from fluxd.controllers.kustomize.native import build_native
from fluxd.kustomize.kyaml import Unsupported
from tests.conftest import tool
from tests.support.snapshot import snapshot_of

Obj = dict[str, Any]
Files = dict[str, str]


@pytest.fixture(scope="module")
def kubectl() -> str:
    return tool("kubectl")


class KustomizeFailed(Exception):
    pass


def kustomize(files: Files, path: str, spec: dict[str, Any], kubectl: str) -> list[Obj]:
    """What Flux's slow path builds: its kustomization generated or merged on disk, then
    ``kubectl kustomize --load-restrictor=LoadRestrictionsNone``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        try:
            flux.generate(root, path, spec)
        except flux.BuildError as exc:
            raise KustomizeFailed(str(exc)) from None
        directory = flux.resolve_path(root, path)
        done = subprocess.run(
            [kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(directory)],
            capture_output=True, check=False, env={"HOME": tmp, "KUBECONFIG": "/dev/null"},
            timeout=60)
        if done.returncode != 0:
            raise KustomizeFailed(done.stderr.decode())
        return flux.load_documents(done.stdout)


def as_json(objects: list[Obj]) -> str:
    return json.dumps(objects, indent=1, sort_keys=True)


def same_as_kubectl(files: Files, path: str, kubectl: str,
                    spec: dict[str, Any] | None = None) -> list[Obj]:
    """The native build, asserted equal to kubectl's (as JSON, so no int/float or
    bool/str confusion hides)."""
    spec = spec or {}
    native = build_native(snapshot_of(files), path, spec)
    expected = kustomize(files, path, spec, kubectl)
    assert as_json(native) == as_json(expected)
    return native


def tree(**files: str) -> Files:
    """Files from keyword arguments: ``app__base__k_yaml`` is ``app/base/k.yaml``."""
    return {name.replace("__", "/").replace("_yaml", ".yaml").replace("_env", ".env")
            .replace("_txt", ".txt"): textwrap.dedent(text).lstrip("\n")
            for name, text in files.items()}


DEPLOYMENT = """
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
      labels: {app: web}
    spec:
      replicas: 1
      selector:
        matchLabels: {app: web}
      template:
        metadata:
          labels: {app: web}
        spec:
          serviceAccountName: web
          containers:
          - name: web
            image: nginx:1.25
            envFrom:
            - configMapRef: {name: settings}
            - secretRef: {name: creds}
          volumes:
          - name: conf
            configMap: {name: settings}
          - name: certs
            secret: {secretName: creds}
    """
SERVICE = """
    apiVersion: v1
    kind: Service
    metadata:
      name: web
    spec:
      selector: {app: web}
      ports:
      - port: 80
    """
SERVICE_ACCOUNT = """
    apiVersion: v1
    kind: ServiceAccount
    metadata:
      name: web
    """
INGRESS = """
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata:
      name: web
    spec:
      rules:
      - host: web.example.com
        http:
          paths:
          - path: /
            pathType: Prefix
            backend:
              service: {name: web, port: {number: 80}}
    """


# ------------------------------------------------------------------ the same as kubectl


def test_a_plain_directory_builds_as_flux_generates_it(kubectl: str) -> None:
    files = tree(app__deploy_yaml=DEPLOYMENT, app__svc_yaml=SERVICE,
                 app__sub__sa_yaml=SERVICE_ACCOUNT, app__sub__deeper__ing_yaml=INGRESS)
    built = same_as_kubectl(files, "app", kubectl)
    assert [o["kind"] for o in built] == ["ServiceAccount", "Service", "Deployment", "Ingress"]


def test_the_spec_transforms_a_plain_directory(kubectl: str) -> None:
    files = tree(app__deploy_yaml=DEPLOYMENT, app__svc_yaml=SERVICE,
                 app__sa_yaml=SERVICE_ACCOUNT, app__ing_yaml=INGRESS)
    built = same_as_kubectl(files, "app", kubectl, {
        "targetNamespace": "team", "namePrefix": "p-", "nameSuffix": "-s",
        "images": [{"name": "nginx", "newTag": "1.27"}]})
    assert {o["metadata"]["namespace"] for o in built} == {"team"}
    assert built[-1]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"][
        "name"] == "p-web-s"


def test_a_directory_with_a_kustomization_directory_below_it(kubectl: str) -> None:
    files = tree(app__svc_yaml=SERVICE,
                 app__child__kustomization_yaml="""
                     namespace: child
                     resources: [sa.yaml]
                     """,
                 app__child__sa_yaml=SERVICE_ACCOUNT,
                 app__child__ignored__cm_yaml="apiVersion: v1\nkind: ConfigMap\n"
                                              "metadata: {name: ignored}\n")
    built = same_as_kubectl(files, "app", kubectl)
    assert [o["metadata"].get("namespace") for o in built] == ["child", None]


def test_an_overlay_transforms_its_sibling_base(kubectl: str) -> None:
    files = tree(
        app__base__kustomization_yaml="""
            resources: [deploy.yaml, svc.yaml, sa.yaml, ing.yaml, more]
            namePrefix: base-
            commonLabels: {tier: web}
            configMapGenerator:
            - name: settings
              literals: [mode=base, level=1]
            secretGenerator:
            - name: creds
              literals: [password=hunter2]
            """,
        app__base__deploy_yaml=DEPLOYMENT, app__base__svc_yaml=SERVICE,
        app__base__sa_yaml=SERVICE_ACCOUNT, app__base__ing_yaml=INGRESS,
        app__base__more__kustomization_yaml="resources: [cm.yaml]\n",
        app__base__more__cm_yaml="""
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: extra}
            data: {a: "1"}
            """,
        app__prod__kustomization_yaml="""
            apiVersion: kustomize.config.k8s.io/v1beta1
            kind: Kustomization
            resources: [../base]
            namespace: prod
            nameSuffix: -prod
            labels:
            - pairs: {env: prod}
            - pairs: {team: a}
              includeSelectors: true
            commonAnnotations: {owner: me}
            images:
            - name: nginx
              newName: registry.example.com/nginx
              newTag: "1.27"
            replicas:
            - name: base-web
              count: 3
            configMapGenerator:
            - name: settings
              behavior: merge
              literals: [mode=prod]
            secretGenerator:
            - name: creds
              behavior: replace
              literals: [password=s3cret]
            """)
    built = same_as_kubectl(files, "app/prod", kubectl)
    deployment = next(o for o in built if o["kind"] == "Deployment")
    configmap = next(o for o in built if o["metadata"]["name"].startswith("base-settings"))
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == \
        configmap["metadata"]["name"]
    assert configmap["data"] == {"mode": "prod", "level": "1"}


def test_generators_read_files_and_env_files(kubectl: str) -> None:
    files = tree(
        app__kustomization_yaml="""
            resources: [deploy.yaml]
            generatorOptions:
              labels: {generated: "yes"}
              annotations: {note: global}
            configMapGenerator:
            - name: settings
              files: [app.properties, renamed=conf/other.txt]
              envs: [vars.env]
              options:
                annotations: {note: local}
                immutable: true
            - name: plain
              namespace: elsewhere
              literals: ["quoted='x y'", 'dq="z"', "eq=a=b", "empty="]
              options:
                disableNameSuffixHash: true
            secretGenerator:
            - name: creds
              type: kubernetes.io/basic-auth
              literals:
              - username=admin
              - password=a long password that needs more than one line of base64 output
            - name: empty
            """,
        app__deploy_yaml=DEPLOYMENT,
        app__app_properties="a=1\nb=2\n",
        app__conf__other_txt="multi\nline <&> text\n",
        app__vars_env="# comment\n\nFOO=bar\n  BAZ=qux quux\nEMPTY=\n")
    files["app/app.properties"] = files.pop("app/app_properties")
    built = same_as_kubectl(files, "app", kubectl)
    assert len([o for o in built if o["kind"] in ("ConfigMap", "Secret")]) == 4


def test_a_component_adds_to_what_its_kustomization_built(kubectl: str) -> None:
    files = tree(
        app__base__kustomization_yaml="resources: [deploy.yaml, svc.yaml]\n",
        app__base__deploy_yaml=DEPLOYMENT, app__base__svc_yaml=SERVICE,
        app__components__monitoring__kustomization_yaml="""
            apiVersion: kustomize.config.k8s.io/v1alpha1
            kind: Component
            resources: [sa.yaml]
            commonLabels: {monitored: "true"}
            configMapGenerator:
            - name: settings
              literals: [scrape=yes]
            """,
        app__components__monitoring__sa_yaml=SERVICE_ACCOUNT,
        app__prod__kustomization_yaml="""
            resources: [../base]
            components: [../components/monitoring]
            namePrefix: prod-
            """)
    same_as_kubectl(files, "app/prod", kubectl)
    # and through the spec, as Flux merges it
    files["app/plain/svc.yaml"] = textwrap.dedent(SERVICE).lstrip()
    same_as_kubectl(files, "app/plain", kubectl, {"components": ["../components/monitoring"]})


def test_patches_apply_as_kustomize_applies_them(kubectl: str) -> None:
    files = tree(
        app__kustomization_yaml="""
            resources: [deploy.yaml, svc.yaml]
            patches:
            - patch: |
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: web}
                spec:
                  template:
                    spec:
                      containers:
                      - name: web
                        env: [{name: MODE, value: patched}]
            - target: {kind: Service}
              patch: |
                - op: replace
                  path: /spec/ports/0/port
                  value: 8080
            - path: replicas.yaml
            """,
        app__deploy_yaml=DEPLOYMENT, app__svc_yaml=SERVICE,
        app__replicas_yaml="""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            spec: {replicas: 5}
            """)
    built = same_as_kubectl(files, "app", kubectl, {"patches": [
        {"target": {"kind": "Deployment", "name": "w.*"},
         "patch": "- op: add\n  path: /metadata/annotations\n  value: {patched: 'true'}\n"}]})
    assert built[1]["spec"]["replicas"] == 5


def test_an_overlay_of_an_overlay_renames_references_twice(kubectl: str) -> None:
    files = tree(
        base__kustomization_yaml="""
            resources: [deploy.yaml, sa.yaml]
            namePrefix: a-
            configMapGenerator: [{name: settings, literals: [x=1]}]
            secretGenerator: [{name: creds, literals: [y=2]}]
            """,
        base__deploy_yaml=DEPLOYMENT, base__sa_yaml=SERVICE_ACCOUNT,
        mid__kustomization_yaml="resources: [../base]\nnamePrefix: b-\nnamespace: mid\n",
        top__kustomization_yaml="""
            resources: [../mid]
            nameSuffix: -c
            configMapGenerator:
            - {name: settings, behavior: merge, literals: [z=3]}
            """)
    same_as_kubectl(files, "top", kubectl, {"targetNamespace": "final"})


def test_a_kustomization_without_resources_gets_origin_annotations_as_flux_asks(
        kubectl: str) -> None:
    files = tree(
        base__kustomization_yaml="""
            resources: [sa.yaml, sub]
            configMapGenerator: [{name: b, literals: [x=1]}]
            """,
        base__sa_yaml=SERVICE_ACCOUNT,
        base__sub__kustomization_yaml="resources: [./cm.yaml]\n",
        base__sub__cm_yaml="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        comp__kustomization_yaml="""
            apiVersion: kustomize.config.k8s.io/v1alpha1
            kind: Component
            resources: [extra.yaml]
            configMapGenerator: [{name: comp, literals: [x=1]}]
            """,
        comp__extra_yaml="apiVersion: v1\nkind: Secret\nmetadata: {name: e}\n",
        ov__kustomization_yaml="""
            bases: [../base]
            components: [../comp]
            configMapGenerator: [{name: b, behavior: merge, literals: [y=2]}]
            secretGenerator: [{name: s, literals: [a=b]}]
            namePrefix: p-
            """)
    built = same_as_kubectl(files, "ov", kubectl)
    assert all("config.kubernetes.io/origin" in o["metadata"]["annotations"] for o in built)
    # an explicit buildMetadata in the spec replaces Flux's
    same_as_kubectl(files, "ov", kubectl, {"buildMetadata": ["originAnnotations"]})
    with pytest.raises(Unsupported):
        build_native(snapshot_of(files), "ov", {"buildMetadata": ["managedByLabel"]})


def test_lists_are_read_as_their_items(kubectl: str) -> None:
    files = tree(
        app__kustomization_yaml="resources: [list.yaml]\nnamePrefix: p-\n",
        app__list_yaml="""
            apiVersion: v1
            kind: List
            items:
            - {apiVersion: v1, kind: ConfigMap, metadata: {name: b}, data: {k: "1"}}
            - apiVersion: v1
              kind: ServiceAccountList
              items: [{apiVersion: v1, kind: ServiceAccount, metadata: {name: a}}]
            ---
            apiVersion: v1
            kind: ConfigMapList
            items: null
            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: a}
            """)
    built = same_as_kubectl(files, "app", kubectl)
    assert [o["metadata"]["name"] for o in built] == ["p-a", "p-a", "p-b"]
    # and in a plain directory
    same_as_kubectl({"plain/list.yaml": files["app/list.yaml"]}, "plain", kubectl)


@pytest.mark.parametrize("order", ["legacy", "fifo"])
def test_sort_options_order_the_output(order: str, kubectl: str) -> None:
    files = tree(
        base__kustomization_yaml="resources: [svc.yaml, deploy.yaml]\n",
        base__svc_yaml=SERVICE, base__deploy_yaml=DEPLOYMENT,
        app__kustomization_yaml=f"""
            resources: [ing.yaml, ../base, sa.yaml]
            sortOptions: {{order: {order}}}
            configMapGenerator: [{{name: settings, literals: [a=b]}}]
            secretGenerator: [{{name: creds, literals: [a=b]}}]
            namePrefix: x-
            """,
        app__ing_yaml=INGRESS, app__sa_yaml=SERVICE_ACCOUNT)
    built = same_as_kubectl(files, "app", kubectl)
    assert (built[0]["kind"] == "Ingress") == (order == "fifo")


def test_ids_differ_by_version_and_namespace_as_kustomize_compares_them(
        kubectl: str) -> None:
    files = {"app/w.yaml": "".join(
        f"---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: a{namespace}}}\n"
        for api, kind, namespace in (
            ("example.com/v1", "Widget", ""), ("example.com/v1beta1", "Widget", ""),
            ("v1", "ConfigMap", ""), ("v1", "ConfigMap", ", namespace: other")))}
    same_as_kubectl(files, "app", kubectl, {"namePrefix": "p-"})
    for twins in ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n",
                  "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: x}\n"):
        files = {"app/a.yaml": twins.replace("namespace: default", "namespace: ''")
                 .replace("namespace: x", "namespace: y"), "app/b.yaml": twins}
        with pytest.raises(Unsupported, match="two objects"):
            build_native(snapshot_of(files), "app", {})
        with pytest.raises(KustomizeFailed):
            kustomize(files, "app", {}, kubectl)


def test_a_patched_generated_object_hashes_its_patched_content(kubectl: str) -> None:
    files = tree(
        base__kustomization_yaml="""
            resources: [deploy.yaml]
            configMapGenerator: [{name: settings, literals: [a=1]}]
            secretGenerator: [{name: creds, literals: [b=2]}]
            """,
        base__deploy_yaml=DEPLOYMENT,
        app__kustomization_yaml="""
            resources: [../base]
            patches:
            - patch: |
                apiVersion: v1
                kind: ConfigMap
                metadata: {name: settings}
                data: {patched: "yes"}
            - target: {kind: Secret, name: creds}
              patch: '[{"op": "add", "path": "/data/c", "value": "Mw=="}]'
            """)
    same_as_kubectl(files, "app", kubectl, {"namePrefix": "x-"})


def test_deprecated_patch_fields_replicas_and_image_tags(kubectl: str) -> None:
    files = tree(
        app__kustomization_yaml="""
            resources: [deploy.yaml, svc.yaml, sa.yaml]
            patchesStrategicMerge:
            - smp.yaml
            - |
              apiVersion: v1
              kind: Service
              metadata: {name: web}
              spec: {type: NodePort}
            patchesJson6902:
            - target: {group: apps, version: v1, kind: Deployment, name: web}
              patch: '[{"op": "add", "path": "/spec/paused", "value": true}]'
            replicas:
            - {name: web, count: 4}
            imageTags:
            - name: nginx
              digest: sha256:00000000000000000000000000000000000000000000000000000000000000ff
            """,
        app__deploy_yaml=DEPLOYMENT, app__svc_yaml=SERVICE, app__sa_yaml=SERVICE_ACCOUNT,
        app__smp_yaml="""
            apiVersion: v1
            kind: ServiceAccount
            metadata: {name: web}
            automountServiceAccountToken: false
            """)
    built = same_as_kubectl(files, "app", kubectl)
    assert built[2]["spec"]["replicas"] == 4


def test_rbac_and_webhooks_follow_namespace_and_names(kubectl: str) -> None:
    files = tree(
        app__kustomization_yaml="""
            resources: [rbac.yaml, sa.yaml]
            namespace: team
            namePrefix: t-
            """,
        app__sa_yaml=SERVICE_ACCOUNT,
        app__rbac_yaml="""
            apiVersion: rbac.authorization.k8s.io/v1
            kind: ClusterRole
            metadata: {name: reader}
            rules: []
            ---
            apiVersion: rbac.authorization.k8s.io/v1
            kind: ClusterRoleBinding
            metadata: {name: reader}
            roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
            subjects:
            - {kind: ServiceAccount, name: web, namespace: default}
            - {kind: ServiceAccount, name: other, namespace: elsewhere}
            ---
            apiVersion: admissionregistration.k8s.io/v1
            kind: ValidatingWebhookConfiguration
            metadata: {name: hook}
            webhooks:
            - name: hook.example.com
              admissionReviewVersions: [v1]
              sideEffects: None
              clientConfig:
                service: {name: web, namespace: default, path: /validate}
            """)
    same_as_kubectl(files, "app", kubectl)


def test_missing_components_are_ignored_when_the_spec_says_so(kubectl: str) -> None:
    files = tree(app__svc_yaml=SERVICE,
                 comp__kustomization_yaml="""
                     apiVersion: kustomize.config.k8s.io/v1alpha1
                     kind: Component
                     commonAnnotations: {component: "yes"}
                     """)
    same_as_kubectl(files, "app", kubectl, {"components": ["../comp", "../missing"],
                                            "ignoreMissingComponents": True})


def test_the_bounds_give_way_to_kustomize() -> None:
    # a chain deeper than the bound
    depth = 40
    files = {f"d{i}/kustomization.yaml": f"resources: [../d{i + 1}]\n" for i in range(depth)}
    files[f"d{depth}/kustomization.yaml"] = "resources: [cm.yaml]\n"
    files[f"d{depth}/cm.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
    with pytest.raises(Unsupported, match="too many kustomizations"):
        build_native(snapshot_of(files), "d0", {})
    # diamonds that would build the levels below exponentially often
    files = {f"{side}{i}/kustomization.yaml": f"resources: [../x{i + 1}, ../y{i + 1}]\n"
             for i in range(14) for side in "xy"}
    files.update({f"{side}14/kustomization.yaml": "namespace: leaf\n" for side in "xy"})
    started = time.perf_counter()
    with pytest.raises(Unsupported, match="too many kustomizations"):
        build_native(snapshot_of(files), "x0", {})
    assert time.perf_counter() - started < 2


# ------------------------------------------------------------------ giving way to kubectl


@pytest.mark.parametrize("kustomization", [
    "resources: [cm.yaml]\nreplacements: [{path: r.yaml}]\n",
    "resources: [cm.yaml]\nvars: [{name: X, objref: {kind: ConfigMap, name: a, apiVersion: v1}}]\n",
    "resources: [cm.yaml]\nhelmCharts: [{name: x}]\n",
    "resources: [cm.yaml]\ngenerators: [gen.yaml]\n",
    "resources: [cm.yaml]\ntransformers: [t.yaml]\n",
    "resources: [cm.yaml]\nvalidators: [v.yaml]\n",
    "resources: [cm.yaml]\nopenapi: {path: schema.json}\n",
    "resources: [cm.yaml]\nconfigurations: [c.yaml]\n",
    "resources: [cm.yaml]\ncrds: [crd.json]\n",
    "resources: [cm.yaml]\nsortOptions: {order: legacy, legacySortOptions: {orderFirst: [A]}}\n",
    "resources: [cm.yaml]\nbuildMetadata: [transformerAnnotations]\n",
    "resources: [https://example.com/cm.yaml]\n",
    "resources: [github.com/org/repo//base?ref=v1]\n",
    "resources: [/etc/cm.yaml]\n",
    "resources: [../../../outside.yaml]\n",
    "resources: [missing.yaml]\n",
    "resources: [cm.yaml, copy.yaml]\n",
    "resources: [.]\n",
    "resources: [cm.yaml]\nconfigMapGenerator: [{name: b, behavior: merge, literals: [x=1]}]\n",
    "resources: [cm.yaml]\nconfigMapGenerator: [{name: a, literals: [x=1]}]\n",
    "resources: [cm.yaml]\nconfigMapGenerator: [{name: b, literals: [x=1, x=2]}]\n",
    "resources: [cm.yaml]\nconfigMapGenerator: [{name: b, envs: [noeq.env]}]\n",
    "resources: [cm.yaml]\nnamePrefix: yes\n",
    "resources: [cm.yaml]\ncomponents: [../app]\n",
])
def test_what_the_engine_does_not_reproduce_goes_to_kustomize(kustomization: str) -> None:
    files = {"app/kustomization.yaml": kustomization,
             "app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
             "app/copy.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
             "app/noeq.env": "JUSTAKEY\n"}
    with pytest.raises(Unsupported):
        build_native(snapshot_of(files), "app", {})


@pytest.mark.parametrize("files, spec", [
    ({"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"},
     {"decryption": {"provider": "sops"}}),
    ({"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  annotations:\n"
                     "    config.kubernetes.io/local-config: 'true'\n"}, {}),
    ({"app/a/kustomization.yaml": "resources: [../b]\n",
      "app/b/kustomization.yaml": "resources: [../a]\n"}, {}),
    ({"app/kustomization.yaml": "resources: [sub]\n",
      "app/sub/kustomization.yaml": "resources: [..]\n"}, {}),
    ({"app/kustomization.yaml": "resources: [c]\n",
      "app/c/kustomization.yaml": "kind: Component\napiVersion: kustomize.config.k8s.io/v1alpha1\n"
                                  "namePrefix: x-\n"}, {}),
    ({"app/kustomization.yaml": "resources: [cm.yaml]\n",
      "app/Kustomization": "resources: []\n",
      "app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"},
     {"namePrefix": "x"}),
    ({"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"},
     {"components": ["/abs"]}),
    ({"app/kustomization.yaml": "resources: [sub]\n",
      "app/sub/kustomization.yaml": "resources: [cm.yaml]\nunknownField: 1\n",
      "app/sub/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}, {}),
    ({"app/kustomization.yaml": "resources: [sub]\n",
      "app/sub/kustomization.yaml": "Resources: [cm.yaml]\n",
      "app/sub/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}, {}),
])
def test_what_flux_or_kustomize_refuse_goes_to_kustomize(files: Files,
                                                         spec: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        build_native(snapshot_of(files), "app", spec)


# ------------------------------------------------------------------ generated trees


NAMES = ["web", "api", "db"]


@st.composite
def workload(draw: st.DrawFn, name: str) -> tuple[str, str]:
    uses_config = draw(st.booleans())
    uses_secret = draw(st.booleans())
    env_from = []
    if uses_config:
        env_from.append("{configMapRef: {name: settings}}")
    if uses_secret:
        env_from.append("{secretRef: {name: creds}}")
    kind = draw(st.sampled_from(["Deployment", "StatefulSet"]))
    image = draw(st.sampled_from(["nginx", "nginx:1.25", "registry.io:5000/team/app:v1"]))
    return kind, textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: {kind}
        metadata:
          name: {name}
        spec:
          replicas: {draw(st.integers(0, 3))}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              serviceAccountName: {name}
              containers:
              - name: main
                image: {image}
                envFrom: [{", ".join(env_from)}]
        """)


def plain(kind: str, name: str) -> str:
    return f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n"


@st.composite
def kustomization_fields(draw: st.DrawFn, level: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["namespace"] = draw(st.sampled_from(["a", "b", "default"]))
    if draw(st.booleans()):
        fields["namePrefix"] = f"{level}-"
    if draw(st.booleans()):
        fields["nameSuffix"] = f"-{level}"
    if draw(st.booleans()):
        fields["commonLabels"] = {f"{level}-label": draw(st.sampled_from(["x", "1", "yes"]))}
    if draw(st.booleans()):
        fields["labels"] = [{"pairs": {f"{level}-pair": "v"},
                             **draw(st.sampled_from([{}, {"includeSelectors": True},
                                                     {"includeTemplates": True}]))}]
    if draw(st.booleans()):
        fields["commonAnnotations"] = {f"{level}/note": draw(st.sampled_from(["x", "true"]))}
    if draw(st.booleans()):
        fields["images"] = [draw(st.sampled_from([
            {"name": "nginx", "newTag": "1.27"}, {"name": "nginx", "newName": "my/nginx"},
            {"name": "registry.io:5000/team/app", "digest": "sha256:" + "ab" * 32}]))]
    return fields


@st.composite
def trees(draw: st.DrawFn) -> tuple[Files, dict[str, Any]]:
    files: Files = {}
    base_names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    base: dict[str, Any] = {"resources": [], **draw(kustomization_fields("base"))}
    kinds = []
    for name in base_names:
        kind, files[f"app/base/{name}.yaml"] = draw(workload(name))
        kinds.append(kind)
        files[f"app/base/{name}-sa.yaml"] = plain("ServiceAccount", name)
        base["resources"] += [f"{name}.yaml", f"{name}-sa.yaml"]
    if draw(st.booleans()):
        files["app/base/rbac.yaml"] = RBAC.format(name=base_names[0])
        base["resources"].append("rbac.yaml")
    if draw(st.booleans()):
        files["app/base/cluster.yaml"] = CLUSTER.format(name=base_names[0])
        base["resources"].append("cluster.yaml")
    if draw(st.booleans()):
        files["app/base/net/kustomization.yaml"] = "resources: [svc.yaml]\n"
        files["app/base/net/svc.yaml"] = NETWORK.format(name=base_names[0])
        base["resources"].append("net")
    if draw(st.booleans()):
        files["app/base/settings.env"] = "MODE=base\nLEVEL=3\n"
        files["app/base/conf/app.ini"] = "[main]\nkey = value\n"
        base["configMapGenerator"] = [{"name": "files", "envs": ["settings.env"],
                                       "files": ["conf/app.ini", "other=conf/app.ini"]}]
    if draw(st.booleans()):
        base.setdefault("configMapGenerator", []).insert(0, {
            "name": "settings", "literals": ["a=1", "b=two"],
            **draw(st.sampled_from([{}, {"namespace": "gen"}]))})
    if draw(st.booleans()):
        base["secretGenerator"] = [{"name": "creds", "literals": ["p=secret"]}]
    if draw(st.booleans()):
        base["generatorOptions"] = draw(st.sampled_from([
            {"disableNameSuffixHash": True}, {"labels": {"generated": "true"}},
            {"annotations": {"a": "b"}, "immutable": True}]))
    overlay: dict[str, Any] = {**draw(st.sampled_from([
        {"resources": ["../base"]}, {"bases": ["../base"]},
        {"resources": ["extra.yaml"], "bases": ["../base"]}])),
        **draw(kustomization_fields("top"))}
    files["app/overlay/extra.yaml"] = plain("Secret", "extra")
    # a generator merging into the base's must name the namespace it has there
    mergeable = "configMapGenerator" in base and base["configMapGenerator"][0][
        "name"] == "settings" and "namespace" not in base["configMapGenerator"][0]
    if mergeable and draw(st.booleans()):
        overlay["configMapGenerator"] = [{
            "name": "settings", "behavior": draw(st.sampled_from(["merge", "replace"])),
            "literals": ["b=three"]}]
    elif not mergeable and "namespace" not in base.get("configMapGenerator", [{}])[0] \
            and draw(st.booleans()):
        overlay["configMapGenerator"] = [{"name": "settings", "literals": ["c=4"]}]
    if "secretGenerator" in base and draw(st.booleans()):
        overlay["secretGenerator"] = [{"name": "creds", "behavior": "merge",
                                       "literals": ["q=more"]}]
    if draw(st.booleans()):
        overlay["replicas"] = [{"name": draw(st.sampled_from(base_names)),
                                "count": draw(st.integers(0, 5))}]
    chosen = draw(st.lists(st.sampled_from(range(len(PATCHES))), max_size=2, unique=True))
    if chosen:
        # every "{name}" in a patch entry names the first workload
        overlay["patches"] = [json.loads(json.dumps(PATCHES[i]).replace(
            "{name}", base_names[0]).replace("{kind}", kinds[0])
            .replace("{{", "{").replace("}}", "}")) for i in chosen]
    if draw(st.booleans()):
        component: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "resources": ["extra.yaml"], **draw(kustomization_fields("comp"))}
        if mergeable and draw(st.booleans()):
            component["configMapGenerator"] = [{"name": "settings", "behavior": "merge",
                                                "literals": ["from=component"]}]
        files["app/component/kustomization.yaml"] = json.dumps(component)
        files["app/component/extra.yaml"] = plain("ConfigMap", "extra")
        overlay["components"] = ["../component"]
    if draw(st.booleans()):
        overlay["patchesStrategicMerge"] = ["smp.yaml"]
        files["app/overlay/smp.yaml"] = (f"apiVersion: v1\nkind: ServiceAccount\n"
                                         f"metadata: {{name: {base_names[-1]}}}\n"
                                         "automountServiceAccountToken: false\n")
    if draw(st.booleans()):
        overlay["patchesJson6902"] = [{
            "target": {"version": "v1", "kind": "ServiceAccount", "name": base_names[0]},
            "patch": '[{"op": "add", "path": "/metadata/labels", "value": {"json": "6902"}}]'}]
    files["app/base/kustomization.yaml"] = json.dumps(base)
    if draw(st.booleans()):
        # one more level between the base and the overlay
        files["app/mid/kustomization.yaml"] = json.dumps(
            {"resources": ["../base"], **draw(kustomization_fields("mid"))})
        for field in ("resources", "bases"):
            if field in overlay:
                overlay[field] = [r.replace("../base", "../mid") for r in overlay[field]]
    files["app/overlay/kustomization.yaml"] = json.dumps(overlay)
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["targetNamespace"] = "flux"
    if draw(st.booleans()):
        spec["namePrefix"] = "f-"
    if draw(st.booleans()):
        spec["images"] = [{"name": "nginx", "newName": "mirror.io/nginx"}]
    if draw(st.booleans()):
        spec["patches"] = [{"target": {"kind": "ServiceAccount"}, "patch":
                            "- op: add\n  path: /automountServiceAccountToken\n"
                            "  value: false\n"}]
    return files, spec


RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects: [{{kind: ServiceAccount, name: {name}}}]
"""
CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {{name: ns-{name}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: cr-{name}}}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: crb-{name}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cr-{name}}}
subjects: [{{kind: ServiceAccount, name: {name}, namespace: default}}]
"""
NETWORK = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  rules:
  - http:
      paths:
      - path: /
        pathType: Prefix
        backend: {{service: {{name: {name}, port: {{number: 80}}}}}}
"""
PATCHES = [
    {"patch": "apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"
              "spec: {{replicas: 7}}\n"},
    {"target": {"kind": "Deployment|StatefulSet"},
     "patch": "- op: replace\n  path: /spec/template/spec/containers/0/image\n"
              "  value: busybox\n"},
    {"target": {"labelSelector": "app={name}"},
     "patch": "- op: add\n  path: /metadata/labels/patched\n  value: 'yes'\n"},
    {"target": {"kind": "ServiceAccount", "name": "{name}"},
     "patch": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: any\n"
              "  annotations: {{patched: smp}}\n"},
]


@pytest.fixture(scope="module")
def outcomes() -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    yield counts
    built, refused = counts["native"], counts["unsupported"]
    # the common shapes generated here are what the engine is for
    assert built >= 0.9 * (built + refused), counts


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(case=trees())
def test_generated_overlays_build_exactly_as_kubectl_builds_them(
        case: tuple[Files, dict[str, Any]], kubectl: str, outcomes: Counter[str]) -> None:
    files, spec = case
    try:
        native = build_native(snapshot_of(files), "app/overlay", spec)
    except Unsupported as exc:
        try:
            kustomize(files, "app/overlay", spec, kubectl)
        except KustomizeFailed as failure:
            outcomes["both refuse"] += 1
            outcomes[f"both refuse: {str(failure)[-60:]}"] += 1
            return
        outcomes["unsupported"] += 1
        outcomes[f"unsupported: {exc}"] += 1
        return
    try:
        expected = kustomize(files, "app/overlay", spec, kubectl)
    except KustomizeFailed as exc:
        pytest.fail(f"kubectl fails where the native build does not: {exc}")
    outcomes["native"] += 1
    assert as_json(native) == as_json(expected)


def test_an_aliased_value_is_a_copy_as_in_kustomize(kubectl: str) -> None:
    files = tree(
        app__kustomization_yaml="""
            resources: [deploy.yaml]
            labels:
            - pairs: {only: template}
              includeTemplates: true
            """,
        app__deploy_yaml="""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            spec:
              selector:
                matchLabels: &labels {app: web}
              template:
                metadata:
                  labels: *labels
                spec:
                  containers: [{name: web, image: nginx}]
            """)
    built = same_as_kubectl(files, "app", kubectl)
    assert built[0]["spec"]["selector"]["matchLabels"] == {"app": "web"}


def test_aliases_that_expand_too_far_are_left_to_kustomize() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nextra:\n" + "".join(
        f"  {line}\n" for line in lines)
    started = time.perf_counter()
    with pytest.raises(Unsupported, match="aliases"):
        build_native(snapshot_of({"app/cm.yaml": text}), "app", {"namePrefix": "x-"})
    assert time.perf_counter() - started < 2


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.text(alphabet="ab <>&\"'\\\t\né€\u2028\x85\x7f=:#{}",
                               max_size=12), min_size=1, max_size=3))
def test_generated_data_hashes_as_kustomize_hashes_it(values: list[str],
                                                      kubectl: str) -> None:
    literals = [f"k{i}={value}" for i, value in enumerate(values)]
    files = {"app/kustomization.yaml": json.dumps({
                 "resources": ["sa.yaml"],
                 "configMapGenerator": [{"name": "c", "literals": literals}],
                 "secretGenerator": [{"name": "s", "literals": literals}]}),
             "app/sa.yaml": plain("ServiceAccount", "sa")}
    try:
        native = build_native(snapshot_of(files), "app", {})
    except Unsupported:
        native = None
    try:
        expected = kustomize(files, "app", {}, kubectl)
    except KustomizeFailed:
        assert native is None, "kustomize fails: the native build must give way"
        return
    if native is None:
        # what is left to kustomize: a value of one quote, a control character, a line
        # break with a tab first
        assert any(value in ("'", '"') or "\x85" in value or "\x7f" in value or (
            "\n" in value and value.startswith("\t")) for value in values)
        return
    assert as_json(native) == as_json(expected)
