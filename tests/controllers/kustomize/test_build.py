"""The Kustomization build: the kustomization file generated or merged as Flux's
generator does it, then the real ``kubectl kustomize`` (found as the other tool tests find
their binaries) run on it; results compared with what kubectl makes of the equivalent
hand-written kustomization."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.clock import Clock, FakeClock, SystemClock
from fluxd.controllers.kustomize import build as builder
from fluxd.controllers.kustomize.build import BuildError, PathNotFound
from tests.conftest import tool

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def kubectl() -> str:
    return tool("kubectl")


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def config_map(name: str, **labels: str) -> str:
    meta = f"  labels: {labels}\n" if labels else ""
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{meta}data:\n  k: v\n"


def deployment(name: str, image: str, *, tier: str = "back") -> str:
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {name}
          labels: {{tier: {tier}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              containers:
              - name: main
                image: {image}
        """)


def kustomization(path: Path) -> Obj:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def kubectl_kustomize(kubectl: str, directory: Path) -> list[Obj]:
    """What kubectl alone makes of a directory, with Flux's load restrictor."""
    done = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", str(directory)],
        capture_output=True, text=True, check=True,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(directory),
             "KUBECONFIG": os.devnull})
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


async def build(root: Path, path: str, spec: Obj, kubectl: str, *,
                seconds: float = 60, clock: Clock | None = None) -> list[Obj]:
    built = await builder.build(root, path, spec, kubectl=kubectl,
                                clock=clock or SystemClock(), timeout=seconds)
    return builder.finish(built, spec)


def names(objects: list[Obj]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


# --------------------------------------------------------------------------- generation


async def test_plain_manifests_get_a_generated_kustomization_that_builds_like_kubectl(
        tmp_path: Path, kubectl: str) -> None:
    root = tmp_path / "artifact"
    write(root, "app/web.yaml", deployment("web", "nginx:1.0"))
    write(root, "app/config.yml", config_map("settings") + "---\n" + config_map("more"))
    write(root, "app/README.md", "not a manifest")
    write(root, "app/values.json", "{}")
    expected_dir = tmp_path / "by-hand"
    shutil.copytree(root / "app", expected_dir)
    write(expected_dir, "kustomization.yaml", "resources: [config.yml, web.yaml]\n")

    objects = await build(root, "./app", {}, kubectl)

    assert kustomization(root / "app/kustomization.yaml") == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["./config.yml", "./web.yaml"]}
    assert objects == await asyncio.to_thread(kubectl_kustomize, kubectl, expected_dir)
    assert names(objects) == ["ConfigMap/more", "ConfigMap/settings", "Deployment/web"]


def test_the_walk_lists_sub_directories_holding_a_kustomization_without_entering_them(
        tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", config_map("a"))
    write(tmp_path, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "base/cm.yaml", config_map("base"))
    write(tmp_path, "base/not-kubernetes.yaml", "only: a setting\n")  # never read
    write(tmp_path, "plain/deeper/x.yml", config_map("x"))
    write(tmp_path, "plain/notes.txt", "ignored")
    write(tmp_path, "z/Kustomization", "resources: []\n")

    assert builder.generate(tmp_path, "", {}) == "created"

    assert kustomization(tmp_path / "kustomization.yaml")["resources"] == [
        "./a.yaml", "./base", "./plain/deeper/x.yml", "./z"]


async def test_an_existing_kustomization_is_kept_under_its_name_and_reported_unchanged(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "app/Kustomization", """
        # a comment Flux's round trip loses
        resources: [cm.yaml]
        commonLabels: {team: a}
        """)
    write(tmp_path, "app/cm.yaml", config_map("cm"))
    write(tmp_path, "app/stray.yaml", "not: kubernetes\n")  # not listed, so not read

    assert await asyncio.to_thread(builder.generate, tmp_path, "app", {}) == "unchanged"

    assert not (tmp_path / "app/kustomization.yaml").exists()
    assert kustomization(tmp_path / "app/Kustomization") == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["cm.yaml"], "commonLabels": {"team": "a"}}
    objects = await build(tmp_path, "app", {}, kubectl)
    assert objects[0]["metadata"]["labels"] == {"team": "a"}


async def test_an_existing_kustomization_without_resources_gets_origin_annotations(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "kustomization.yaml", """
        configMapGenerator:
        - name: generated
          literals: [a=b]
        buildMetadata: [managedByLabel]
        """)

    objects = await build(tmp_path, ".", {}, kubectl)

    # Flux replaces the list, so kustomize's managed-by label is gone too
    assert kustomization(tmp_path / "kustomization.yaml")["buildMetadata"] == [
        "originAnnotations"]
    meta = objects[0]["metadata"]
    assert "config.kubernetes.io/origin" in meta["annotations"]
    assert "labels" not in meta


async def test_fields_kustomize_does_not_know_are_dropped_as_flux_round_trip_does(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "kustomization.yaml", """
        resources: [cm.yaml]
        NamePrefix: x-
        tpyo: [oops]
        """)
    write(tmp_path, "cm.yaml", config_map("cm"))
    with pytest.raises(subprocess.CalledProcessError):
        await asyncio.to_thread(kubectl_kustomize, kubectl, tmp_path)

    objects = await build(tmp_path, "", {}, kubectl)

    assert names(objects) == ["ConfigMap/x-cm"]
    assert "tpyo" not in kustomization(tmp_path / "kustomization.yaml")


async def test_an_empty_directory_builds_to_nothing_through_a_placeholder_namespace(
        tmp_path: Path, kubectl: str) -> None:
    (tmp_path / "empty").mkdir()

    assert await build(tmp_path, "empty", {}, kubectl) == []

    assert kustomization(tmp_path / "empty/kustomization.yaml")["namespace"] == "_placeholder"


@pytest.mark.parametrize(("content", "cause"), [
    ("name: CI\non: push\n", "missing kind in object {{ } {{ } map[] map[]}}"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n",
     "missing metadata.name in object {{v1 ConfigMap} {{ } map[a:b] map[]}}"),
    ("- a\n- b\n", "missing Resource metadata"),
    ("kind: ConfigMapList\nitems:\n- kind: ConfigMap\n  metadata: {}\n",
     "missing metadata.name in object {{ ConfigMap} {{ } map[] map[]}}"),
    ("kind: ConfigMap\nmetadata: {name: [\n", "yaml: line 3: "),
])
def test_a_yaml_file_that_is_not_kubernetes_yaml_fails_naming_the_file(
        tmp_path: Path, content: str, cause: str) -> None:
    write(tmp_path, "app/good.yaml", config_map("good"))
    bad = write(tmp_path, "app/sub/bad.yaml", content)

    with pytest.raises(BuildError) as failed:
        builder.generate(tmp_path, "app", {})

    assert str(failed.value).startswith(f"failed to decode Kubernetes YAML from {bad}: {cause}")
    assert not (tmp_path / "app/kustomization.yaml").exists()


def test_lists_empty_documents_and_utf16_files_are_valid_kubernetes_yaml(
        tmp_path: Path) -> None:
    write(tmp_path, "list.yaml", "apiVersion: v1\nkind: ConfigMapList\nitems: []\n")
    write(tmp_path, "empty.yaml", "---\n---\n")
    (tmp_path / "utf16.yaml").write_bytes(config_map("wide").encode("utf-16"))

    assert builder.generate(tmp_path, "", {}) == "created"
    assert len(kustomization(tmp_path / "kustomization.yaml")["resources"]) == 3


def test_a_fifo_among_the_manifests_fails_the_walk_instead_of_blocking_it(
        tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")

    with pytest.raises(BuildError, match=r"pipe\.yaml: not a regular file"):
        builder.generate(tmp_path, "", {})


# --------------------------------------------------------------------------- spec fields


async def test_target_namespace_prefix_and_suffix_override_the_kustomization(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "kustomization.yaml", """
        namespace: from-file
        namePrefix: file-
        resources: [cm.yaml]
        """)
    write(tmp_path, "cm.yaml", config_map("cm"))
    expected_dir = tmp_path / "by-hand"
    write(expected_dir, "cm.yaml", config_map("cm"))
    write(expected_dir, "kustomization.yaml", """
        namespace: apps
        namePrefix: pre-
        nameSuffix: -suf
        resources: [cm.yaml]
        """)

    objects = await build(tmp_path, "", {"targetNamespace": "apps", "namePrefix": "pre-",
                                         "nameSuffix": "-suf"}, kubectl)

    assert objects == await asyncio.to_thread(kubectl_kustomize, kubectl, expected_dir)
    assert objects[0]["metadata"] == {"name": "pre-cm-suf", "namespace": "apps"}


async def test_strategic_merge_and_json6902_patches_reach_only_their_targets(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "kustomization.yaml", """
        resources: [front.yaml, back.yaml, cms.yaml]
        patches:
        - target: {kind: Deployment}
          patch: |
            - op: add
              path: /metadata/annotations
              value: {from-file: "yes"}
        """)
    write(tmp_path, "front.yaml", deployment("front", "nginx:1.0", tier="front"))
    write(tmp_path, "back.yaml", deployment("back", "nginx:1.0"))
    write(tmp_path, "cms.yaml", config_map("one") + "---\n" + textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: two
          annotations: {patch-me: "true"}
        """))
    spec = {"patches": [
        {"target": {"group": "apps", "version": "v1", "kind": "Deployment",
                    "labelSelector": "tier=front"},
         "patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: any\n"
                  "spec:\n  replicas: 3\n"},
        {"target": {"kind": "ConfigMap", "name": "t.*", "annotationSelector": "patch-me"},
         "patch": '[{"op": "add", "path": "/data", "value": {"patched": "1"}}]'},
        {"target": {"kind": "Deployment", "namespace": "elsewhere"},
         "patch": '[{"op": "replace", "path": "/spec/replicas", "value": 9}]'},
    ]}

    objects = {o["metadata"]["name"]: o for o in await build(tmp_path, "", spec, kubectl)}

    assert objects["front"]["spec"]["replicas"] == 3
    assert objects["back"]["spec"]["replicas"] == 1
    assert objects["front"]["metadata"]["annotations"] == {"from-file": "yes"}
    assert objects["two"]["data"] == {"patched": "1"}
    assert objects["one"]["data"] == {"k": "v"}
    written = kustomization(tmp_path / "kustomization.yaml")["patches"]
    assert [p["target"] for p in written[1:]] == [p["target"] for p in spec["patches"]]


async def test_images_are_merged_by_name_each_spec_entry_replacing_the_file_entry(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "kustomization.yaml", """
        resources: [web.yaml, cache.yaml, tool.yaml]
        images:
        - {name: nginx, newTag: "1.1"}
        - {name: redis, newName: mirror/redis}
        """)
    write(tmp_path, "web.yaml", deployment("web", "nginx:1.0"))
    write(tmp_path, "cache.yaml", deployment("cache", "redis:7"))
    write(tmp_path, "tool.yaml", deployment("tool", "busybox:1"))
    digest = "sha256:" + "a" * 64
    spec = {"images": [{"name": "nginx", "newName": "registry.local/nginx"},
                       {"name": "busybox", "newTag": "2", "digest": digest}]}

    objects = await build(tmp_path, "", spec, kubectl)

    images = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["image"]
              for o in objects}
    # the nginx entry lost its newTag with the rest of the file's entry; kustomize 5.7
    # writes both a new tag and a digest
    assert images == {"web": "registry.local/nginx:1.0", "cache": "mirror/redis:7",
                      "tool": f"busybox:2@{digest}"}
    assert kustomization(tmp_path / "kustomization.yaml")["images"] == [
        {"name": "nginx", "newName": "registry.local/nginx"},
        {"name": "redis", "newName": "mirror/redis"},
        {"name": "busybox", "newTag": "2", "digest": digest}]


def component(root: Path, relative: str, label: str) -> None:
    write(root, f"{relative}/kustomization.yaml", f"""
        apiVersion: kustomize.config.k8s.io/v1alpha1
        kind: Component
        labels:
        - pairs: {{{label}: "on"}}
        """)


async def test_components_from_the_spec_follow_the_files_own(
        tmp_path: Path, kubectl: str) -> None:
    component(tmp_path, "components/a", "a")
    component(tmp_path, "components/b", "b")
    write(tmp_path, "app/cm.yaml", config_map("cm"))
    write(tmp_path, "app/kustomization.yaml", """
        resources: [cm.yaml]
        components: [../components/a]
        """)

    objects = await build(tmp_path, "app", {"components": ["../components/b"]}, kubectl)

    assert objects[0]["metadata"]["labels"] == {"a": "on", "b": "on"}
    assert kustomization(tmp_path / "app/kustomization.yaml")["components"] == [
        "../components/a", "../components/b"]


async def test_a_missing_component_fails_in_kustomize_unless_missing_ones_are_ignored(
        tmp_path: Path, kubectl: str) -> None:
    component(tmp_path, "components/a", "a")
    write(tmp_path, "app/cm.yaml", config_map("cm"))
    spec: Obj = {"components": ["../components/a", "../components/gone"]}

    with pytest.raises(BuildError) as failed:
        await build(tmp_path, "app", spec, kubectl)
    assert str(failed.value).startswith("kustomize build failed: ")
    assert "components/gone" in str(failed.value)

    (tmp_path / "app/kustomization.yaml").unlink()
    objects = await build(tmp_path, "app", {**spec, "ignoreMissingComponents": True}, kubectl)
    assert objects[0]["metadata"]["labels"] == {"a": "on"}
    assert kustomization(tmp_path / "app/kustomization.yaml")["components"] == [
        "../components/a"]


@pytest.mark.parametrize("path", ["https://github.com/org/repo//components/a",
                                  "git@github.com:org/repo", "/abs/component",
                                  "file:///abs/component"])
def test_a_component_that_is_not_a_local_relative_path_is_refused(
        tmp_path: Path, path: str) -> None:
    write(tmp_path, "cm.yaml", config_map("cm"))

    with pytest.raises(BuildError, match=r"^component path '.*' must be local and relative$"):
        builder.generate(tmp_path, "", {"components": [path],
                                        "ignoreMissingComponents": True})


async def test_build_metadata_from_the_spec_annotates_the_objects(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "cm.yaml", config_map("cm"))

    objects = await build(tmp_path, "", {"buildMetadata": ["originAnnotations"]}, kubectl)

    assert objects[0]["metadata"]["annotations"] == {
        "config.kubernetes.io/origin": "path: cm.yaml\n"}


# --------------------------------------------------------------------------- after the build


async def test_common_metadata_overrides_object_keys_but_leaves_selectors_alone(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "web.yaml", deployment("web", "nginx:1.0"))
    spec = {"commonMetadata": {"labels": {"tier": "common", "team": "a"},
                               "annotations": {"owner": "ops"}}}

    [web] = await build(tmp_path, "", spec, kubectl)

    assert web["metadata"]["labels"] == {"tier": "common", "team": "a"}
    assert web["metadata"]["annotations"] == {"owner": "ops"}
    assert web["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert web["spec"]["template"]["metadata"]["labels"] == {"app": "web"}


async def test_an_object_without_an_api_version_is_refused(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "cm.yaml", "kind: ConfigMap\nmetadata:\n  name: cm\n")

    with pytest.raises(BuildError) as failed:
        await build(tmp_path, "", {}, kubectl)

    assert str(failed.value) == ("failed to decode Kubernetes apiVersion, kind and name "
                                 'from: {"kind":"ConfigMap","metadata":{"name":"cm"}}')


def sops_secret(**annotations: str) -> str:
    meta = f"  annotations: {annotations}\n" if annotations else ""
    return ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: apps\n"
            f"{meta}data:\n  token: ENC[AES256_GCM,data:abc]\nsops:\n  version: 3.8.1\n")


async def test_a_sops_encrypted_secret_is_refused(tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "secret.yaml", sops_secret())

    with pytest.raises(BuildError) as failed:
        await build(tmp_path, "", {}, kubectl)

    assert str(failed.value) == ("Secret/apps/creds is SOPS encrypted, configuring "
                                 "decryption is required for this secret to be reconciled")


@pytest.mark.parametrize("value", ["disabled", "Disabled", "DISABLED"])
async def test_a_sops_secret_with_decryption_disabled_passes_through(
        tmp_path: Path, kubectl: str, value: str) -> None:
    write(tmp_path, "secret.yaml",
          sops_secret(**{"kustomize.toolkit.fluxcd.io/decrypt": value}))

    [secret] = await build(tmp_path, "", {}, kubectl)

    assert secret["sops"] == {"version": "3.8.1"}


async def test_decryption_disabled_by_common_metadata_also_lets_the_secret_through(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "secret.yaml", sops_secret())
    spec = {"commonMetadata": {"annotations": {
        "kustomize.toolkit.fluxcd.io/decrypt": "disabled"}}}

    assert len(await build(tmp_path, "", spec, kubectl)) == 1


async def test_a_decryption_spec_is_refused_as_unsupported(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "cm.yaml", config_map("cm"))

    with pytest.raises(BuildError, match="SOPS decryption is not supported by fluxd"):
        await build(tmp_path, "", {"decryption": {"provider": "sops"}}, kubectl)


async def test_a_kustomize_error_surfaces_kustomizes_own_message(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "kustomization.yaml", "resources: [cm.yaml, missing.yaml]\n")
    write(tmp_path, "cm.yaml", config_map("cm"))

    with pytest.raises(BuildError) as failed:
        await build(tmp_path, "", {}, kubectl)

    message = str(failed.value)
    assert message.startswith("kustomize build failed: accumulating resources: ")
    assert "missing.yaml" in message
    assert "error:" not in message and message == message.strip()


async def test_a_build_that_outlives_its_timeout_is_killed(
        tmp_path: Path, kubectl: str) -> None:
    # kustomize blocks reading a FIFO nobody writes to
    os.mkfifo(tmp_path / "stuck.yaml")
    write(tmp_path, "kustomization.yaml", "resources: [stuck.yaml]\n")
    started = time.monotonic()
    clock = FakeClock()
    building = asyncio.create_task(build(tmp_path, "", {}, kubectl, seconds=1, clock=clock))
    for _ in range(500):  # once kustomize runs, its second passes (10 s real at most)
        if building.done():
            break
        if running_for(tmp_path):
            clock.advance(1)
        await asyncio.sleep(0.02)
    assert building.done()

    with pytest.raises(BuildError, match=r"^kustomize build failed: timeout after 1s$"):
        await building

    assert time.monotonic() - started < 10
    assert not running_for(tmp_path)


def running_for(directory: Path) -> list[int]:
    """The pids of processes whose command line names ``directory``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(directory).encode() in cmdline:
            found.append(int(pid))
    return found


# --------------------------------------------------------------------------- confinement


async def test_a_missing_path_is_path_not_found(tmp_path: Path, kubectl: str) -> None:
    with pytest.raises(PathNotFound) as failed:
        await build(tmp_path, "./clusters/prod", {}, kubectl)

    assert str(failed.value) == (f"kustomization path not found: stat "
                                 f"{tmp_path}/clusters/prod: no such file or directory")
    assert isinstance(failed.value, BuildError)


@pytest.mark.parametrize("path", ["../outside", "../../../outside", "/../outside",
                                  "app/../../outside"])
def test_a_path_climbing_out_of_the_root_is_clamped_to_it(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    write(tmp_path, "outside/cm.yaml", config_map("outside"))
    (root / "app").mkdir(parents=True)

    with pytest.raises(PathNotFound, match=re.escape(f"stat {root}/outside: no such file")):
        builder.generate(root, path, {})

    write(root, "outside/cm.yaml", config_map("inside"))
    assert builder.generate(root, path, {}) == "created"
    assert (root / "outside/kustomization.yaml").exists()
    assert not (tmp_path / "outside/kustomization.yaml").exists()


def test_a_symlinked_path_is_resolved_as_if_the_root_were_slash(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(tmp_path, "elsewhere/cm.yaml", config_map("elsewhere"))
    (root / "links").mkdir(parents=True)
    (root / "links/absolute").symlink_to(tmp_path / "elsewhere")
    (root / "links/relative").symlink_to("../../elsewhere")
    write(root, f"{tmp_path}/elsewhere/cm.yaml".lstrip("/"), config_map("chrooted"))

    assert builder.resolve_path(root, "links/absolute") == root / str(tmp_path / "elsewhere"
                                                                          ).lstrip("/")
    with pytest.raises(PathNotFound, match=re.escape(f"stat {root}/elsewhere: no such file")):
        builder.resolve_path(root, "links/relative")


def test_a_manifest_symlinked_out_of_the_root_fails_the_walk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    secret = write(tmp_path, "host/secret.yaml", config_map("host-secret"))
    write(root, "app/cm.yaml", config_map("cm"))
    (root / "app/leak.yaml").symlink_to(secret)

    with pytest.raises(BuildError) as failed:
        builder.generate(root, "app", {})

    assert f"path '{root}/app/leak.yaml' is not in or below" in str(failed.value)


@pytest.mark.parametrize("kustomization_text", [
    "configMapGenerator:\n- name: leak\n  files: [token={host}]\n",
    "resources: [../../host/secret.yaml]\n",
    "secretGenerator:\n- name: leak\n  envs: [../../host/env]\n",
    "patches:\n- path: {host}\n",
    "generators: [gen.yaml]\n",
])
async def test_a_kustomization_naming_a_file_outside_the_root_is_refused(
        tmp_path: Path, kubectl: str, kustomization_text: str) -> None:
    root = tmp_path / "root"
    host = write(tmp_path, "host/secret.yaml", config_map("host-secret"))
    write(tmp_path, "host/env", "A=b\n")
    write(root, "app/gen.yaml", f"""
        apiVersion: builtin
        kind: ConfigMapGenerator
        metadata: {{name: leak}}
        files: [{host}]
        """)
    write(root, "app/kustomization.yaml", kustomization_text.format(host=host))

    with pytest.raises(BuildError, match="is not in or below"):
        await build(root, "app", {}, kubectl)


async def test_references_between_directories_inside_the_root_are_allowed(
        tmp_path: Path, kubectl: str) -> None:
    write(tmp_path, "base/cm.yaml", config_map("base"))
    write(tmp_path, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "shared/patch.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                         "  name: base\ndata:\n  extra: x\n")
    write(tmp_path, "shared/env", "A=b\n")
    write(tmp_path, "overlay/kustomization.yaml", """
        resources: [../base]
        patches: [{path: ../shared/patch.yaml}]
        configMapGenerator: [{name: env, envs: [../shared/env]}]
        """)

    objects = await build(tmp_path, "overlay", {}, kubectl)

    assert objects == await asyncio.to_thread(kubectl_kustomize, kubectl, tmp_path / "overlay")
    assert objects[0]["data"] == {"k": "v", "extra": "x"}
    assert objects[1]["data"] == {"A": "b"}


# --------------------------------------------------------------------------- helpers


def test_go_yaml_reading_keeps_dates_and_odd_scalars_as_strings() -> None:
    [doc] = builder.load_documents(
        "a: 2024-01-02\nb: =\nc: 1:30\nd: y\ne: 1e3\nf: 09\ng: !Custom x\n")

    assert doc == {"a": "2024-01-02", "b": "=", "c": "1:30", "d": True, "e": 1000.0,
                   "f": 9.0, "g": "x"}


def test_kubectl_is_the_configured_one_else_the_one_beside_python_else_on_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert builder.find_kubectl("/opt/kubectl") == "/opt/kubectl"
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        assert builder.find_kubectl(None) == str(beside)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert builder.find_kubectl(None) is None
    binary = tmp_path / "kubectl"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert builder.find_kubectl(None) == str(binary)

