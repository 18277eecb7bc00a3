"""The native build is held equal to the real kustomize (``kubectl kustomize`` through
``build.build``) over generated trees of plain manifests, and gives way to it
(``Unsupported``) for anything it does not reproduce. Kustomizations with transforming
fields are held equal in ``tests/kustomize/test_engine.py``."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.clock import SystemClock
from fluxd.controllers.kustomize import build as builder
from fluxd.controllers.kustomize.native import base_directory, build_native
from fluxd.kustomize.kyaml import Unsupported
from tests.conftest import tool
from tests.support.snapshot import snapshot_of

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def kubectl() -> str:
    return tool("kubectl")


async def kustomize(files: dict[str, str], path: str, kubectl: str) -> list[Obj]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return await builder.build(root, path, {}, kubectl=kubectl, clock=SystemClock(),
                                   timeout=60)


def doc(api_version: str, kind: str, name: str, namespace: str | None = None,
        body: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    return f"apiVersion: {api_version}\nkind: {kind}\n{meta}{body}"


# ------------------------------------------------------------------ the same as kustomize


async def test_a_directory_of_manifests_builds_as_kustomize_orders_it(kubectl: str) -> None:
    files = {
        "app/z.yaml": doc("apps/v1", "Deployment", "web", "apps", "spec:\n  replicas: 2\n"),
        "app/cm.yaml": "---\n" + doc("v1", "ConfigMap", "b", "b") + "---\n"
                       + doc("v1", "ConfigMap", "a", "b") + "---\n"
                       + doc("v1", "ConfigMap", "z", "a") + "\n---\n",
        "app/ns.yml": doc("v1", "Namespace", "apps"),
        "app/nested/deeper/crd.yaml": doc("example.com/v1", "Widget", "w")
                                      + "spec:\n  size: 3\n",
        "app/nested/g.yaml": doc("a.io/v1", "Gadget", "g"),
        "app/hooks.yaml": doc("admissionregistration.k8s.io/v1",
                              "MutatingWebhookConfiguration", "m"),
        "app/readme.txt": "not a manifest",
        "other/x.yaml": doc("v1", "ConfigMap", "elsewhere", "x"),
    }
    native = build_native(snapshot_of(files), "./app", {})
    assert native is not None
    assert native == await kustomize(files, "./app", kubectl)
    assert [o["kind"] for o in native] == [
        "Namespace", "ConfigMap", "ConfigMap", "ConfigMap", "Deployment", "Gadget", "Widget",
        "MutatingWebhookConfiguration"]


async def test_objects_without_a_namespace_sort_as_kustomize_sorts_them(kubectl: str) -> None:
    files = {"a.yaml": "---\n".join(doc("v1", "ConfigMap", n, ns) for n, ns in (
        ("m", None), ("m", "a"), ("m", "zz"), ("a", None), ("b", "default")))}
    native = build_native(snapshot_of(files), "", {})
    assert native == await kustomize(files, "", kubectl)


async def test_an_empty_directory_builds_nothing_as_kustomize_does(kubectl: str) -> None:
    files = {"app/readme.md": "# nothing here"}
    assert build_native(snapshot_of(files), "app", {}) == []
    assert await kustomize(files, "app", kubectl) == []


#: values kustomize reads in ways the native build leaves to it (it must then give way)
RISKY = ["1_000", "2024-01-01", ".inf", "!!binary aGVsbG8=", "1e400", "-0x1"]
SCALARS = ["yes", "no", "on", "off", "y", "n", "true", "False", "~", "null", "0755", "0o17",
           "0x1F", "1e3", "12:30", "3.0", "-0", "-.5", "08", "1.2.3", "5.", "+12", *RISKY,
           '"quoted yes"', "'single'", "plain text", "héllo wörld", "a: b".replace(": ", ":"),
           "|\n    multi\n    line", ">-\n    folded\n    text", "[1, two, 3.5]",
           "{a: 1, b: [x]}", "''", "\"\"", "!!str 42", "0"]

names = st.text(alphabet="abcxyz-", min_size=1, max_size=3).filter(
    lambda s: s[0] != "-" and s[-1] != "-")
kinds = st.sampled_from([
    ("v1", "ConfigMap", True), ("v1", "Secret", True), ("v1", "Service", True),
    ("v1", "ServiceAccount", True), ("v1", "Namespace", False), ("apps/v1", "Deployment", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1", "Role", True), ("example.com/v1", "Widget", True),
    ("example.com/v1beta1", "Widget", True), ("a.io/v2", "Gadget", False),
    ("v1", "Endpoints", True), ("policy/v1", "PodDisruptionBudget", True),
])


@st.composite
def manifest(draw: st.DrawFn) -> tuple[tuple[str, str, str, str], str]:
    api_version, kind, namespaced = draw(kinds)
    name = draw(names)
    namespace = draw(st.sampled_from([None, "a", "default", "zz"])) if namespaced else None
    values = draw(st.lists(st.sampled_from(SCALARS), max_size=4))
    body = ""
    if values:
        body = "data:\n" + "".join(f"  k{i}: {v}\n" for i, v in enumerate(values))
    group = api_version.rpartition("/")[0]
    return (group, kind, namespace or "", name), doc(api_version, kind, name, namespace, body)


@st.composite
def tree(draw: st.DrawFn) -> dict[str, str]:
    docs = draw(st.lists(manifest(), min_size=1, max_size=8,
                         unique_by=lambda m: m[0]))
    files: dict[str, str] = {}
    for i, (_, text) in enumerate(docs):
        directory = draw(st.sampled_from(["app", "app/sub", "app/sub/deep", "app/other"]))
        name = f"{directory}/f{i}.{draw(st.sampled_from(['yaml', 'yml']))}"
        separator = draw(st.sampled_from(["", "---\n", "# a comment\n---\n"]))
        files[name] = separator + text
    return files


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=tree())
async def test_generated_trees_build_exactly_as_kustomize_builds_them(
        files: dict[str, str], kubectl: str) -> None:
    native: list[Obj] | None
    try:
        native = build_native(snapshot_of(files), "app", {})
    except Unsupported:
        native = None
    risky = any(f": {value}\n" in text for text in files.values() for value in RISKY)
    try:
        expected = await kustomize(files, "app", kubectl)
    except builder.BuildError:
        assert native is None, "kustomize fails: the native build must give way"
        return
    if native is None:
        assert risky, "plain manifests take the native path"
        return
    assert native == expected
    # equal as JSON too: no int/float or bool/str confusion that == would hide
    assert json.dumps(native, sort_keys=True) == json.dumps(expected, sort_keys=True)


# ------------------------------------------------------------------ giving way to kustomize


@pytest.mark.parametrize("files, spec", [
    ({"app/kustomization.yaml": "resources: [cm.yaml]\n",
      "app/cm.yaml": doc("v1", "ConfigMap", "a")}, {}),
    ({"app/sub/kustomization.yaml": "resources: []\n",
      "app/cm.yaml": doc("v1", "ConfigMap", "a")}, {}),
    ({"app/cm.yaml": doc("v1", "ConfigMap", "a")}, {"targetNamespace": "x"}),
    ({"app/cm.yaml": doc("v1", "ConfigMap", "a")}, {"namePrefix": "p-"}),
    ({"app/cm.yaml": doc("v1", "ConfigMap", "a")}, {"images": [{"name": "x"}]}),
])
async def test_kustomizations_and_transforming_fields_build_natively(
        files: dict[str, str], spec: dict[str, Any], kubectl: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        expected = await builder.build(root, "app", spec, kubectl=kubectl,
                                       clock=SystemClock(), timeout=60)
    assert build_native(snapshot_of(files), "app", spec) == expected


@pytest.mark.parametrize("files, spec", [
    ({"app/cm.yaml": doc("v1", "ConfigMap", "a")}, {"patches": [{"patch": "x"}]}),
    ({"app/cm.yaml": doc("v1", "ConfigMap", "a")}, {"components": ["../c"]}),
    ({"app/cm.yaml": doc("v1", "ConfigMap", "a")}, {"decryption": {"provider": "sops"}}),
    ({"app/cm.yaml": "base: &b {a: 1}\n" + doc("v1", "ConfigMap", "a")
      + "data:\n  <<: *b\n"}, {}),
    ({"app/cm.yaml": "kind: ConfigMap\nmetadata:\n  name: a\n"}, {}),
    ({"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"}, {}),
    ({"app/list.yaml": "apiVersion: v1\nkind: List\nitems: [a]\n"}, {}),
    ({"app/a.yaml": doc("v1", "ConfigMap", "a"), "app/b.yaml": doc("v1", "ConfigMap", "a")},
     {}),
    ({"app/bad.yaml": "a: [unclosed\n"}, {}),
    ({"app/cm.yaml": "- just\n- a list\n"}, {}),
    ({"other/cm.yaml": doc("v1", "ConfigMap", "a")}, {}),
])
def test_what_the_native_build_does_not_reproduce_goes_to_kustomize(
        files: dict[str, str], spec: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        build_native(snapshot_of(files), "app", spec)


@pytest.mark.parametrize("path, expected", [
    ("", ""), (".", ""), ("./", ""), ("./app", "app"), ("app/", "app"), ("/app", "app"),
    ("app/../other", "other"), ("a/./b", "a/b"),
])
def test_spec_path_is_read_inside_the_artifact(path: str, expected: str) -> None:
    assert base_directory(path) == expected


def test_a_path_leaving_the_artifact_is_left_to_kustomize() -> None:
    # normpath keeps "/.." at the root, so the only way out is refused by the slow path
    assert base_directory("../x") == "x"
    with pytest.raises(Unsupported):
        build_native(snapshot_of({"x/cm.yaml": doc("v1", "ConfigMap", "a")}), "../../etc", {})


def test_a_long_run_of_digits_is_read_in_linear_time() -> None:
    # the scalar resolvers run on the event loop: a quadratic pattern over a 40 KB
    # number-like string from a repository took seconds
    value = "0" + "9" * 40_000
    files = {"app/cm.yaml": doc("v1", "ConfigMap", "a", body=f"data:\n  k: {value}x\n")}
    started = time.perf_counter()
    built = build_native(snapshot_of(files), "app", {})
    assert time.perf_counter() - started < 0.5
    assert built is not None and built[0]["data"] == {"k": f"{value}x"}
    # the number itself is still one kustomize must judge
    files = {"app/cm.yaml": doc("v1", "ConfigMap", "a", body=f"data:\n  k: {value}\n")}
    with pytest.raises(Unsupported):
        build_native(snapshot_of(files), "app", {})
