"""The Kustomization build: the kustomization file generated or merged as Flux's
generator does it, then the real ``kubectl kustomize`` (found as the other tool tests find
their binaries) run on it; results compared with what kubectl makes of the equivalent
hand-written kustomization."""

from __future__ import annotations

import asyncio
import functools
import hashlib
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

from fluxd.artifacts.snapshot import Snapshot
from fluxd.clock import Clock, FakeClock, SystemClock
from fluxd.controllers.kustomize import build as builder
from fluxd.controllers.kustomize import native
from fluxd.controllers.kustomize.build import BuildError, PathNotFound
from tests.conftest import tool
from tests.support.snapshot import snapshot_of as support_snapshot_of

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



# --------------------------------------------------------------------------- closure


snapshot_of = functools.partial(support_snapshot_of, dedent=True)


def monorepo(apps: int) -> dict[str, str]:
    """A repository of ``apps`` apps sharing a base and a component, each an overlay
    with a patch file, a generator file and an env file."""
    files = {
        "base/kustomization.yaml": "resources: [deploy.yaml]\n",
        "base/deploy.yaml": deployment("web", "nginx:1.0"),
        "components/team/kustomization.yaml": """
            apiVersion: kustomize.config.k8s.io/v1alpha1
            kind: Component
            commonLabels: {team: a}
            """,
        "README.md": "a monorepo\n",
    }
    for i in range(apps):
        files |= {
            f"apps/app-{i}/kustomization.yaml": f"""
                resources: [../../base, cm.yaml]
                components: [../../components/team]
                namePrefix: app-{i}-
                patches:
                - path: patches/replicas.yaml
                configMapGenerator:
                - name: settings
                  files: [config/app.properties]
                  envs: [config/app.env]
                """,
            f"apps/app-{i}/cm.yaml": config_map(f"plain-{i}"),
            f"apps/app-{i}/patches/replicas.yaml": """
                apiVersion: apps/v1
                kind: Deployment
                metadata: {name: web}
                spec: {replicas: 3}
                """,
            f"apps/app-{i}/config/app.properties": f"index={i}\n",
            f"apps/app-{i}/config/app.env": f"APP=app-{i}\n",
            f"apps/app-{i}/config/unused.txt": "never read\n",
        }
    return files


async def whole_build(snapshot: Snapshot, path: str, spec: Obj, kubectl: str,
                      root: Path) -> list[Obj]:
    """Today's build: the whole artifact written out, then kustomize."""
    await asyncio.to_thread(root.mkdir)
    await asyncio.to_thread(snapshot.write_to, root)
    return await builder.build(root, path, spec, kubectl=kubectl, clock=SystemClock(),
                               timeout=60)


async def closure_build(snapshot: Snapshot, path: str, spec: Obj, kubectl: str
                        ) -> builder.Built:
    directory = native.base_directory(path)
    assert directory is not None
    return await builder.build_snapshot(snapshot, directory, path, spec, kubectl=kubectl,
                                        clock=SystemClock(), timeout=60)


async def test_building_one_app_of_a_monorepo_writes_only_the_files_it_reads(
        tmp_path: Path, kubectl: str) -> None:
    snapshot = snapshot_of(monorepo(200))
    spec: Obj = {"targetNamespace": "team-a"}

    built = await closure_build(snapshot, "./apps/app-7", spec, kubectl)

    read = builder.closure(snapshot, "apps/app-7", spec)
    assert sorted(read.files) == [
        "apps/app-7/cm.yaml", "apps/app-7/config/app.env",
        "apps/app-7/config/app.properties", "apps/app-7/kustomization.yaml",
        "apps/app-7/patches/replicas.yaml", "base/deploy.yaml", "base/kustomization.yaml",
        "components/team/kustomization.yaml"]
    assert (built.written, built.whole, built.remote) == (8, None, False)
    assert len(snapshot.files) == 1204
    assert built.objects == await whole_build(snapshot, "./apps/app-7", spec, kubectl,
                                              tmp_path / "whole")
    shown = names(built.objects)
    assert shown[0] == "ConfigMap/app-7-plain-7" and shown[2] == "Deployment/app-7-web"
    assert shown[1].startswith("ConfigMap/app-7-settings-")  # with its content hash
    deployment_ = built.objects[2]
    assert deployment_["spec"]["replicas"] == 3
    assert deployment_["metadata"]["namespace"] == "team-a"


async def test_a_generated_kustomization_reads_the_walked_manifests_and_what_they_name(
        tmp_path: Path, kubectl: str) -> None:
    snapshot = snapshot_of({
        "clusters/prod/apps.yaml": config_map("apps"),
        "clusters/prod/notes.txt": "not listed",
        "clusters/prod/infra/deeper/cm.yml": config_map("deep"),
        "clusters/prod/overlay/kustomization.yaml": """
            resources: [../../../shared/svc]
            images: [{name: nginx, newTag: "2.0"}]
            """,
        "clusters/prod/overlay/unused.json": "{}",
        "shared/svc/kustomization.yml": "resources: [web.yaml]\n",
        "shared/svc/web.yaml": deployment("web", "nginx:1.0"),
        "shared/other/x.yaml": config_map("other"),
        "components/extra/kustomization.yaml": """
            apiVersion: kustomize.config.k8s.io/v1alpha1
            kind: Component
            resources: [extra.yaml]
            """,
        "components/extra/extra.yaml": config_map("extra"),
    }, "clusters/prod/empty")
    spec: Obj = {"components": ["../../components/extra"], "nameSuffix": "-x"}

    read = builder.closure(snapshot, "clusters/prod", spec)
    built = await closure_build(snapshot, "clusters/prod", spec, kubectl)

    assert sorted(read.files) == [
        "clusters/prod/apps.yaml", "clusters/prod/infra/deeper/cm.yml",
        "clusters/prod/overlay/kustomization.yaml", "clusters/prod/overlay/unused.json",
        "components/extra/extra.yaml", "components/extra/kustomization.yaml",
        "shared/svc/kustomization.yml", "shared/svc/web.yaml"]
    assert built.objects == await whole_build(snapshot, "clusters/prod", spec, kubectl,
                                              tmp_path / "whole")
    assert names(built.objects) == ["ConfigMap/apps-x", "ConfigMap/deep-x",
                                    "ConfigMap/extra-x", "Deployment/web-x"]


async def test_generator_and_transformer_configurations_bring_the_files_they_name(
        tmp_path: Path, kubectl: str) -> None:
    snapshot = snapshot_of({
        "app/kustomization.yaml": """
            resources: [cm.yaml]
            generators: [gen/secret.yaml]
            transformers: [labels.yaml]
            configurations: [conf/names.yaml]
            crds: [crd/schema.json]
            replacements: [{path: repl.yaml}]
            openapi: {path: openapi/schema.json}
            patchesJson6902:
            - target: {version: v1, kind: ConfigMap, name: cm}
              path: json.yaml
            patchesStrategicMerge: [smp.yaml]
            """,
        "app/cm.yaml": config_map("cm"),
        "app/gen/secret.yaml": """
            apiVersion: builtin
            kind: SecretGenerator
            metadata: {name: creds}
            envs: [secrets/creds.env]
            """,
        "app/secrets/creds.env": "user=me\n",
        "app/labels.yaml": """
            apiVersion: builtin
            kind: PatchStrategicMergeTransformer
            metadata: {name: smp}
            paths: [more/patch.yaml]
            """,
        "app/more/patch.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n",
        "app/conf/names.yaml": "nameReference: []\n",
        "app/crd/schema.json": "{}",
        "app/repl.yaml": "[]\n",
        "app/openapi/schema.json": "{}",
        "app/json.yaml": "[]\n",
        "app/smp.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n",
        "other/big.yaml": config_map("other"),
    })

    read = builder.closure(snapshot, "app", {})

    assert read.files == {path for path in snapshot.files if path.startswith("app/")}


@pytest.mark.parametrize(("kustomization_file", "reason"), [
    ("resources: [../../outside]\n", "'../../outside' leaves the artifact"),
    ("resources: [/etc]\n", "'/etc' leaves the artifact"),
    ("resources: [sub]\n", "app/sub/kustomization.yaml: field 'Resources'"),
    ("helmCharts: [{name: x}]\n", "app/kustomization.yaml: helmCharts"),
    ("generators: [plugin.yaml]\n", "plugin configuration of kind 'SopsGenerator'"),
    ("transformers:\n- |\n  apiVersion: builtin\n  kind: LabelTransformer\n",
     "inline plugin configuration"),
    ("crds: [sub]\n", "'sub' names a directory"),
    ("resources: [cm.yaml\n", "app/kustomization.yaml does not parse"),
])
def test_what_a_build_reads_is_unknown_for_what_is_not_followed_safely(
        kustomization_file: str, reason: str, tmp_path: Path) -> None:
    snapshot = snapshot_of({"app/kustomization.yaml": kustomization_file,
                            "app/cm.yaml": config_map("cm"),
                            "app/sub/x.yaml": config_map("x"),
                            "app/sub/kustomization.yaml": "Resources: [x.yaml]\n",
                            "app/plugin.yaml": "apiVersion: x\nkind: SopsGenerator\n",
                            "other/y.yaml": config_map("y")})

    with pytest.raises(builder.ClosureUnknown, match=re.escape(reason)):
        builder.closure(snapshot, "app", {})
    # then the whole artifact is written, as before
    (tmp_path / "out").mkdir()
    written = builder.write_for_build(snapshot, "app", {}, tmp_path / "out")
    assert written == (6, reason, False)


def test_the_root_kustomization_is_read_as_flux_round_trip_leaves_it() -> None:
    snapshot = snapshot_of({"app/kustomization.yaml": "Resources: [cm.yaml]\ntpyo: 1\n",
                            "app/cm.yaml": config_map("cm"), "base/cm.yaml": config_map("b"),
                            "base/kustomization.yaml": "resources: [cm.yaml]\n"})
    assert builder.closure(snapshot, "app", {}).files == {"app/kustomization.yaml",
                                                           "app/cm.yaml"}


def test_a_closure_past_its_bound_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = snapshot_of({f"app/m{i}.yaml": config_map(f"m{i}") for i in range(6)})
    monkeypatch.setattr(builder, "CLOSURE_MAX_FILES", 5)
    with pytest.raises(builder.ClosureUnknown, match="more than 5 files"):
        builder.closure(snapshot, "app", {})


def test_a_remote_base_is_noted_and_not_followed() -> None:
    snapshot = snapshot_of({"app/kustomization.yaml": """
        resources:
        - https://github.com/example/repo//base?ref=v1
        - cm.yaml
        """, "app/cm.yaml": config_map("cm")})

    read = builder.closure(snapshot, "app", {})

    assert read.remote
    assert read.files == {"app/kustomization.yaml", "app/cm.yaml"}


def test_cycles_between_kustomizations_are_walked_once() -> None:
    snapshot = snapshot_of({"a/kustomization.yaml": "resources: [../b]\n",
                            "b/kustomization.yaml": "resources: [../a]\n"})
    assert builder.closure(snapshot, "a", {}).files == {"a/kustomization.yaml",
                                                         "b/kustomization.yaml"}


async def test_a_missing_path_or_a_file_fails_as_the_whole_artifact_build_does(
        kubectl: str) -> None:
    snapshot = snapshot_of({"app/cm.yaml": config_map("cm"), "other/y.yaml": config_map("y")})
    with pytest.raises(PathNotFound, match=r"kustomization path not found: stat .*/nowhere"):
        await closure_build(snapshot, "nowhere", {}, kubectl)
    not_a_directory = re.escape("app/cm.yaml/kustomization.yaml: not a directory")
    with pytest.raises(BuildError, match=not_a_directory):
        await closure_build(snapshot, "app/cm.yaml", {}, kubectl)
    assert builder.closure(snapshot, "nowhere", {}).files == frozenset()


async def test_a_missing_sibling_base_fails_in_kustomize_as_with_the_whole_artifact(
        tmp_path: Path, kubectl: str) -> None:
    snapshot = snapshot_of({"app/kustomization.yaml": "resources: [../gone]\n",
                            "other/y.yaml": config_map("y")})
    with pytest.raises(BuildError) as closure_error:
        await closure_build(snapshot, "app", {}, kubectl)
    with pytest.raises(BuildError) as whole_error:
        await whole_build(snapshot, "app", {}, kubectl, tmp_path / "whole")
    root = re.compile(r"/tmp/[^ :']*?/(?=app|gone)|" + re.escape(str(tmp_path / "whole")) + "/")
    assert root.sub("<root>/", str(closure_error.value)) == \
        root.sub("<root>/", str(whole_error.value))


# --------------------------------------------------------------------------- reuse


def test_kustomizations_with_the_same_build_inputs_share_a_key() -> None:
    spec: Obj = {"interval": "1m", "targetNamespace": "a", "prune": True}
    key = builder.build_key("sha256:1", "apps/x", spec)
    assert builder.build_key("sha256:1", "apps/x", {**spec, "interval": "5m",
                                                    "wait": True}) == key
    assert builder.build_key("sha256:2", "apps/x", spec) != key
    assert builder.build_key("sha256:1", "apps/y", spec) != key
    for field, value in [("targetNamespace", "b"), ("namePrefix", "p-"),
                         ("patches", [{"patch": "x"}]), ("images", [{"name": "n"}]),
                         ("components", ["c"]), ("ignoreMissingComponents", True),
                         ("buildMetadata", ["originAnnotations"]), ("nameSuffix", "-s")]:
        assert builder.build_key("sha256:1", "apps/x", {**spec, field: value}) != key
    sub = builder.substitution_key(key, {"a": "1"}, None, True)
    assert builder.substitution_key(key, {"a": "1"}, None, True) == sub
    assert builder.substitution_key(key, {"a": "2"}, None, True) != sub
    assert builder.substitution_key(key, {"a": "1"}, "Always", True) != sub
    assert builder.substitution_key(key, {"a": "1"}, None, False) != sub
    assert builder.substitution_key(key, {"a": "\udcff"}, None, True) != sub


async def test_kept_manifests_come_back_as_copies_their_users_may_change() -> None:
    cache = builder.ManifestCache(max_entries=10, max_bytes=1 << 20)
    objects: list[Obj] = [{"kind": "ConfigMap", "metadata": {"name": "a"}}]
    await cache.put("k", objects)
    objects[0]["metadata"]["name"] = "changed after put"

    first = await cache.get("k")
    assert first == [{"kind": "ConfigMap", "metadata": {"name": "a"}}]
    assert first is not None
    first[0]["metadata"]["labels"] = {"x": "y"}
    assert await cache.get("k") == [{"kind": "ConfigMap", "metadata": {"name": "a"}}]
    assert await cache.get("other") is None
    assert (cache.hits, cache.misses) == (2, 1)


async def test_the_manifest_cache_is_bounded_by_entries_and_by_bytes() -> None:
    by_entries = builder.ManifestCache(max_entries=2, max_bytes=1 << 20)
    for key in "abc":
        await by_entries.put(key, [{"k": key}])
    assert len(by_entries) == 2 and await by_entries.get("a") is None

    # entries are kept compressed: values that do not compress
    def value(key: str) -> str:
        return hashlib.sha512(key.encode()).hexdigest()

    by_bytes = builder.ManifestCache(max_entries=100, max_bytes=300)
    for key in "abcdef":
        await by_bytes.put(key, [{"k": value(key)}])
    assert by_bytes.weight <= 300 and len(by_bytes) < 6
    assert await by_bytes.get("f") == [{"k": value("f")}]

    off = builder.ManifestCache(max_entries=0, max_bytes=1 << 20)
    await off.put("a", [{}])
    assert len(off) == 0 and await off.get("a") is None


async def test_plugin_configurations_and_replacements_build_as_with_the_whole_artifact(
        tmp_path: Path, kubectl: str) -> None:
    snapshot = snapshot_of({
        "app/kustomization.yaml": """
            resources: [cm.yaml]
            generators: [gen/secret.yaml]
            transformers: [smp.yaml]
            replacements: [{path: replacements/tier.yaml}]
            """,
        "app/cm.yaml": config_map("cm", tier="back"),
        "app/gen/secret.yaml": """
            apiVersion: builtin
            kind: SecretGenerator
            metadata: {name: creds}
            envs: [secrets/creds.env]
            """,
        "app/secrets/creds.env": "user=me\n",
        "app/smp.yaml": """
            apiVersion: builtin
            kind: PatchStrategicMergeTransformer
            metadata: {name: smp}
            paths: [patches/cm.yaml]
            """,
        "app/patches/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
                               "data: {patched: 'yes'}\n",
        "app/replacements/tier.yaml": """
            - source: {kind: ConfigMap, name: cm, fieldPath: metadata.labels.tier}
              targets:
              - select: {kind: ConfigMap, name: cm}
                fieldPaths: [data.tier]
                options: {create: true}
            """,
        **{f"noise/n{i}.yaml": config_map(f"n{i}") for i in range(50)},
    })

    built = await closure_build(snapshot, "app", {"namePrefix": "p-"}, kubectl)

    assert built.whole is None and built.written == 7
    assert built.objects == await whole_build(snapshot, "app", {"namePrefix": "p-"},
                                              kubectl, tmp_path / "whole")
    cm = next(o for o in built.objects if o["kind"] == "ConfigMap")
    assert cm["data"] == {"k": "v", "patched": "yes", "tier": "back"}
    assert names(built.objects)[1].startswith("Secret/p-creds-")
