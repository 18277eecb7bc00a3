"""kustomize's patches applied in process equal what ``kubectl kustomize`` makes of the same
objects and patches, and anything not reproduced is refused with ``Unsupported``."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.controllers.kustomize.native import sort_key
from fluxd.kustomize.identity import PREVIOUS_NAMES
from fluxd.kustomize.kyaml import Unsupported, load_documents
from fluxd.kustomize.patch import (
    apply_patches,
    apply_patches_json6902,
    apply_patches_strategic_merge,
    select,
)
from tests.conftest import tool

Obj = dict[str, Any]

_BUILD_ANNOTATION = "internal.config.kubernetes.io/"


@pytest.fixture(scope="module")
def kubectl() -> str:
    return tool("kubectl")


def dump(objects: list[Obj]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def kustomize(kubectl: str, resources: str, kustomization: Obj,
              files: dict[str, str]) -> list[Obj] | None:
    """What ``kubectl kustomize`` builds; None when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "resources.yaml").write_text(resources)
        (root / "kustomization.yaml").write_text(
            json.dumps({"resources": ["resources.yaml"], **kustomization}))
        for name, text in files.items():
            (root / name).write_text(text)
        run = subprocess.run([kubectl, "kustomize", str(root)], capture_output=True,
                             timeout=60, check=False)
    if run.returncode != 0:
        return None
    return sorted(load_documents(run.stdout), key=sort_key)


def strip_build_annotations(obj: Obj) -> Obj:
    # what kustomize does once the build is over (the engine's last step)
    annotations = obj.get("metadata", {}).get("annotations")
    if annotations:
        for key in [k for k in annotations if k.startswith(_BUILD_ANNOTATION)]:
            del annotations[key]
        if not annotations:
            del obj["metadata"]["annotations"]
    return obj


def native(resources: str, kustomization: Obj, files: dict[str, str]) -> list[Obj]:
    def read(path: str) -> bytes:
        if path not in files:
            raise Unsupported(f"no file {path}")
        return files[path].encode()

    objects = load_documents(resources.encode())
    if "patchesStrategicMerge" in kustomization:
        objects = apply_patches_strategic_merge(
            objects, kustomization["patchesStrategicMerge"], read)
    if "patches" in kustomization:
        objects = apply_patches(objects, kustomization["patches"], read)
    if "patchesJson6902" in kustomization:
        objects = apply_patches_json6902(objects, kustomization["patchesJson6902"], read)
    return sorted((strip_build_annotations(obj) for obj in objects), key=sort_key)


def assert_same_as_kustomize(kubectl: str, objects: list[Obj], kustomization: Obj,
                             files: dict[str, str] | None = None) -> None:
    resources = dump(objects)
    expected = kustomize(kubectl, resources, kustomization, files or {})
    assert expected is not None, "kustomize builds this"
    actual = native(resources, kustomization, files or {})
    assert json.dumps(actual, sort_keys=True) == json.dumps(expected, sort_keys=True)


def deployment(name: str = "web", **labels: str) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, **labels}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "app:1",
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "ports": [{"containerPort": 8080}],
                         "resources": {"limits": {"cpu": "1"}}},
                        {"name": "sidecar", "image": "sidecar:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def service(name: str = "web") -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def configmap(name: str = "settings") -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"a": "1"}}


def smp(kind: str, name: str, body: str, api_version: str = "apps/v1") -> str:
    meta = f"metadata:\n  name: {name}\n"
    if body.startswith("metadata:\n"):  # more metadata, under the one key
        meta, body = meta + body.removeprefix("metadata:\n"), ""
    return f"apiVersion: {api_version}\nkind: {kind}\n{meta}{body}"


OBJECTS = [deployment(), deployment("api", tier="back"), service(), configmap()]


# ------------------------------------------------------------- strategic merge patches


@pytest.mark.parametrize("body", [
    "spec:\n  replicas: 3\n",
    # a container's image, env and resources, found by name
    "spec:\n  template:\n    spec:\n      containers:\n      - name: sidecar\n"
    "        image: sidecar:2\n",
    "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        env:\n"
    "        - name: B\n          value: two\n        - name: C\n          value: '3'\n",
    "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        resources:\n"
    "          limits:\n            memory: 1Gi\n          requests:\n            cpu: 100m\n",
    # a new container, a new volume, a new port
    "spec:\n  template:\n    spec:\n      containers:\n      - name: proxy\n"
    "        image: proxy:1\n",
    "spec:\n  template:\n    spec:\n      volumes:\n      - name: cache\n"
    "        emptyDir: {}\n",
    "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n        ports:\n"
    "        - containerPort: 9090\n",
    # deletions: a container, a field by null, a map
    "spec:\n  template:\n    spec:\n      containers:\n      - name: sidecar\n"
    "        $patch: delete\n",
    "spec:\n  template:\n    spec:\n      containers:\n      - name: app\n"
    "        resources: null\n",
    "spec:\n  selector:\n    $patch: replace\n    matchLabels:\n      app: other\n",
    "metadata:\n  annotations:\n    team: a\n",
    "metadata:\n  labels:\n    app: null\n    tier: front\n",
])
def test_a_strategic_merge_patch_of_a_deployment_is_applied_as_kustomize_applies_it(
        kubectl: str, body: str) -> None:
    assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [{"patch": smp(
        "Deployment", "web", body)}]})


def test_a_patch_with_patch_delete_removes_the_object(kubectl: str) -> None:
    assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [
        {"patch": smp("ConfigMap", "settings", "$patch: delete\n", "v1")}]})


def test_a_patch_with_a_target_applies_to_every_selected_object(kubectl: str) -> None:
    patch = smp("Deployment", "ignored", "spec:\n  replicas: 0\n")
    for target in ({"kind": "Deployment"}, {"name": "a.*"}, {"labelSelector": "tier=back"},
                   {"kind": "Deploy"}, {"name": "eb"}, {"annotationSelector": "x"}):
        assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [
            {"patch": patch, "target": target}]})


def test_a_patch_file_with_several_documents_patches_each_object(kubectl: str) -> None:
    files = {"patch.yaml": smp("Deployment", "api", "spec:\n  replicas: 2\n") + "---\n"
             + smp("Service", "web", "spec:\n  type: NodePort\n", "v1")}
    assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [{"path": "patch.yaml"}]}, files)


def test_a_name_change_is_allowed_only_by_the_option(kubectl: str) -> None:
    patch = smp("ConfigMap", "renamed", "data:\n  b: '2'\n", "v1")
    for options in ({}, {"allowNameChange": True}):
        assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [
            {"patch": patch, "target": {"kind": "ConfigMap"}, "options": options}]})


def test_a_kind_change_is_allowed_only_by_the_option(kubectl: str) -> None:
    patch = smp("Secret", "x", "data:\n  b: Mg==\n", "v1")
    for options in ({}, {"allowKindChange": True}):
        assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [
            {"patch": patch, "target": {"kind": "ConfigMap"}, "options": options}]})


def test_an_object_renamed_by_a_json_patch_is_still_found_by_its_first_name(
        kubectl: str) -> None:
    assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [
        {"patch": '[{"op": "replace", "path": "/metadata/name", "value": "renamed"}]',
         "target": {"kind": "ConfigMap"}},
        {"patch": smp("ConfigMap", "settings", "data:\n  b: '2'\n", "v1")},
        {"patch": smp("ConfigMap", "x", "data:\n  c: '3'\n", "v1"),
         "target": {"name": "settings"}},
    ]})


def test_a_target_namespace_of_default_selects_objects_without_one(kubectl: str) -> None:
    objects = [*OBJECTS, {**configmap("elsewhere"), "metadata": {
        "name": "elsewhere", "namespace": "prod"}}]
    for namespace in ("default", "prod", "p.*"):
        assert_same_as_kustomize(kubectl, objects, {"patches": [
            {"patch": smp("ConfigMap", "x", "data:\n  b: '2'\n", "v1"),
             "target": {"kind": "ConfigMap", "namespace": namespace}}]})


def test_the_deprecated_patches_strategic_merge_take_files_and_inline_patches(
        kubectl: str) -> None:
    files = {"replicas.yaml": smp("Deployment", "web", "spec:\n  replicas: 5\n")}
    inline = smp("Deployment", "api", "spec:\n  replicas: 7\n")
    assert_same_as_kustomize(kubectl, OBJECTS, {
        "patchesStrategicMerge": ["replicas.yaml", inline]}, files)


def test_a_renamed_object_is_found_by_its_previous_name() -> None:
    renamed = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "p-settings", "annotations": {
            PREVIOUS_NAMES: "settings",
            "internal.config.kubernetes.io/previousNamespaces": "default",
            "internal.config.kubernetes.io/previousKinds": "ConfigMap"}}}]
    patched = apply_patches(renamed, [{"patch": smp(
        "ConfigMap", "settings", "data:\n  b: '2'\n", "v1")}], lambda _: b"")
    assert patched[0]["data"] == {"b": "2"}
    assert patched[0]["metadata"]["name"] == "p-settings"
    assert select(renamed, {"name": "settings"}) == renamed


# ------------------------------------------------------------------------- JSON 6902


@pytest.mark.parametrize("ops, target", [
    ('[{"op": "replace", "path": "/spec/replicas", "value": 4}]', {"kind": "Deployment"}),
    ("- op: add\n  path: /spec/template/spec/containers/0/args\n  value: [--debug]\n"
     "- op: remove\n  path: /spec/template/spec/containers/1\n",
     {"kind": "Deployment", "name": "w.*"}),
    ("- op: test\n  path: /spec/replicas\n  value: 1\n- op: add\n  path: /metadata/labels/x\n"
     "  value: z\n", {"labelSelector": "app in (web,api)"}),
    ("- op: add\n  path: /metadata/annotations\n  value: {a: b}\n", {"kind": "Service"}),
    ("- op: replace\n  path: /metadata/name\n  value: renamed\n", {"kind": "ConfigMap"}),
])
def test_a_json_patch_is_applied_to_its_targets_as_kustomize_applies_it(
        kubectl: str, ops: str, target: Obj) -> None:
    assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [{"patch": ops, "target": target}]})


def test_a_json_patch_file_is_read_by_path(kubectl: str) -> None:
    files = {"ops.yaml": "- op: add\n  path: /data/b\n  value: '2'\n"}
    assert_same_as_kustomize(kubectl, OBJECTS, {"patches": [
        {"path": "ops.yaml", "target": {"kind": "ConfigMap", "name": "settings"}}]}, files)
    assert_same_as_kustomize(kubectl, OBJECTS, {"patchesJson6902": [
        {"path": "ops.yaml", "target": {"version": "v1", "kind": "ConfigMap",
                                        "name": "settings"}}]}, files)


# --------------------------------------------------------------------- giving way


@pytest.mark.parametrize("entry", [
    {"patch": "- op: add\n  path: /spec/x\n  value: 1\n"},  # JSON patch without target
    {"patch": "[]", "target": {"kind": "Deployment"}},
    {"patch": "- op: remove\n  path: /spec/missing\n", "target": {"kind": "Deployment"}},
    {"patch": "- op: add\n  path: /spec/x\n  value: yes\n", "target": {"kind": "Deployment"}},
    {"patch": "- op: add\n  path: /spec/x\n  value: y\n", "target": {"kind": "Deployment"}},
    {"patch": "spec:\n  replicas: 2\n", "target": {"kind": "Deployment"}},
    {"patch": smp("Deployment", "missing", "spec:\n  replicas: 2\n")},
    {"patch": smp("Deployment", "web", "spec:\n  $retainKeys: [replicas]\n")},
    {"patch": smp("Deployment", "web", "spec:\n  template:\n    spec:\n      containers:\n"
                  "      - image: nameless\n")},
    {"patch": smp("Deployment", "web", "spec:\n  replicas: {a: 1}\n")},
    {"patch": "x", "target": {"name": "("}},
    {"path": "missing.yaml"},
    {"patch": "a: b", "path": "b.yaml"},
    {"patch": "- &a {op: test, path: /a, value: 1}\n- *a\n", "target": {"kind": "ConfigMap"}},
])
def test_what_is_not_reproduced_is_unsupported(entry: Obj) -> None:
    with pytest.raises(Unsupported):
        apply_patches([*OBJECTS], [entry], lambda path: (_ for _ in ()).throw(
            Unsupported(path)))


def test_a_cluster_scoped_object_is_patched_whatever_namespace_the_patch_names(
        kubectl: str) -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    patch = ("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n"
             "  name: reader\n  namespace: elsewhere\nrules: []\n")
    assert_same_as_kustomize(kubectl, [role], {"patches": [{"patch": patch}]})


# ------------------------------------------------------------- generated patches

_NAMES = st.sampled_from(["app", "sidecar", "proxy"])
_SCALARS = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "x y", "1", "true"]),
                     st.booleans())


@st.composite
def containers(draw: st.DrawFn, *, patch: bool) -> list[Obj]:
    names = draw(st.lists(_NAMES, min_size=0 if patch else 1, max_size=3, unique=True))
    result = []
    for name in names:
        container: Obj = {"name": name}
        if draw(st.booleans()):
            container["image"] = draw(st.sampled_from(["a:1", "b:2"]))
        if draw(st.booleans()):
            container["env"] = [{"name": n, "value": draw(st.sampled_from(["1", "2"]))}
                                for n in draw(st.lists(st.sampled_from("ABC"), max_size=3,
                                                       unique=True))]
        if draw(st.booleans()):
            container["args"] = draw(st.lists(st.sampled_from(["-a", "-b"]), max_size=2))
        if draw(st.booleans()):
            container["ports"] = [{"containerPort": p} for p in draw(
                st.lists(st.sampled_from([80, 81]), max_size=2, unique=True))]
        if patch and draw(st.integers(0, 5)) == 0:
            container["$patch"] = "delete"
        if patch and draw(st.integers(0, 5)) == 0:
            container["image"] = None
        result.append(container)
    return result


@st.composite
def maps(draw: st.DrawFn, *, patch: bool) -> Obj:
    keys = draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True))
    result: Obj = {}
    for key in keys:
        choice = draw(st.integers(0, 6 if patch else 5))
        if choice <= 2:
            result[key] = draw(_SCALARS)
        elif choice <= 3:
            result[key] = {"x": draw(_SCALARS)}
        elif choice == 4:
            result[key] = draw(st.lists(_SCALARS, max_size=2))
        elif choice == 5:
            result[key] = None
        else:
            result[key] = {"$patch": draw(st.sampled_from(["delete", "replace"])),
                           "y": draw(_SCALARS)}
    return result


@st.composite
def generated(draw: st.DrawFn) -> tuple[list[Obj], Obj]:
    kind = draw(st.sampled_from(["Deployment", "Service", "ConfigMap", "Widget"]))
    if kind == "Deployment":
        obj = deployment()
        obj["spec"]["template"]["spec"]["containers"] = draw(containers(patch=False))
        body: Obj = {"spec": {"template": {"spec": {
            "containers": draw(containers(patch=True))}}}}
        if draw(st.booleans()):
            body["spec"]["replicas"] = draw(st.sampled_from([0, 2, None]))
        if draw(st.booleans()):
            obj["spec"]["template"]["spec"]["volumes"] = [
                {"name": n, "emptyDir": {}} for n in draw(st.lists(
                    st.sampled_from(["data", "cache"]), max_size=2, unique=True))]
            body["spec"]["template"]["spec"]["volumes"] = [
                {"name": n, "configMap": {"name": "x"}} for n in draw(st.lists(
                    st.sampled_from(["data", "tmp"]), max_size=2, unique=True))]
        if draw(st.booleans()):
            body["metadata"] = {"labels": {
                k: v for k, v in draw(maps(patch=True)).items()
                if not isinstance(v, dict | list)}}
    elif kind == "Service":
        obj = service()
        with_protocol = draw(st.booleans())

        def port(number: int, *, patch: bool) -> Obj:
            item: Obj = {"port": number, "targetPort": draw(st.sampled_from([1, 2]))}
            if with_protocol:
                item["protocol"] = "TCP"
            if patch and draw(st.integers(0, 4)) == 0:
                item["$patch"] = "delete"
            return item

        numbers = st.lists(st.sampled_from([80, 443, 8080, 9090]), max_size=3, unique=True)
        obj["spec"]["ports"] = [port(n, patch=False) for n in draw(numbers)]
        body = {"spec": {"ports": [port(n, patch=True) for n in draw(numbers)]}}
    elif kind == "ConfigMap":
        obj = configmap()
        obj["data"] = {k: str(v) for k, v in draw(maps(patch=False)).items()}
        body = {"data": {k: (None if v is None else str(v))
                         for k, v in draw(maps(patch=True)).items()
                         if not isinstance(v, dict)}}
    else:
        obj = {"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": "w"}, "spec": draw(maps(patch=False))}
        body = {"spec": draw(maps(patch=True))}
    api_version, name = obj["apiVersion"], obj["metadata"]["name"]
    patch = {"apiVersion": api_version, "kind": kind,
             "metadata": {"name": name, **body.pop("metadata", {})}, **body}
    if draw(st.integers(0, 9)) == 0:
        patch["$patch"] = "delete"
    if draw(st.booleans()):
        obj["metadata"]["finalizers"] = draw(st.lists(st.sampled_from("xyz"), unique=True))
    if draw(st.booleans()):
        patch["metadata"]["finalizers"] = draw(st.lists(st.sampled_from("xyz"), unique=True))
    entry: Obj = {"patch": yaml.safe_dump(patch, sort_keys=False)}
    if draw(st.booleans()):
        entry["target"] = {"kind": kind}
        patch["metadata"]["name"] = "any"
        entry["patch"] = yaml.safe_dump(patch, sort_keys=False)
    return [obj, configmap("other")], {"patches": [entry]}


# What patch.py refuses on purpose although kustomize has an answer (see its docstring).
BY_DESIGN = ("$patch: replace on a list item", "$patch in a list that is replaced",
             "patch labels that are not a map of strings",
             "a patch that puts a non-string over a string")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=generated())
def test_generated_strategic_merge_patches_equal_kustomize(
        kubectl: str, case: tuple[list[Obj], Obj]) -> None:
    objects, kustomization = case
    resources = dump(objects)
    expected = kustomize(kubectl, resources, kustomization, {})
    try:
        actual = native(resources, kustomization, {})
    except Unsupported as refusal:
        assert expected is None or str(refusal) in BY_DESIGN, "reproduce what works"
        return
    assert expected is not None, "kustomize fails: the native patch must give way"
    assert json.dumps(actual, sort_keys=True) == json.dumps(expected, sort_keys=True)
