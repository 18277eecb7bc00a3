"""HelmRelease post-rendering: in process, and through the real helm 4 as a plugin."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.api.helm import HelmReleaseSpec
from fluxd.cli import main
from fluxd.clock import SystemClock
from fluxd.controllers.helm.postrender import (
    MAX_MANIFEST_BYTES,
    PLUGIN_NAME,
    PostRenderConfig,
    PostRenderError,
    common_metadata_digest,
    error_path,
    install_plugin,
    post_render,
    post_renderer_argv,
    post_renderers_digest,
    read_error,
    run_command,
    serve,
)
from tests.conftest import Cluster, tool
from tests.support.helmrepo import write_chart

DEPLOYMENT = """\
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
      containers:
      - name: web
        image: nginx:1.25
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"""

HOOK = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  annotations:
    helm.sh/hook: pre-install
data:
  mode: hook
"""

REPLICAS_PATCH = {"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
                           "spec:\n  replicas: 3\n",
                  "target": {"kind": "Deployment"}}


def config(**fields: Any) -> PostRenderConfig:
    return PostRenderConfig(**{"name": "web", "namespace": "apps", **fields})


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def stream(*docs: str) -> str:
    return "".join(f"---\n{doc}" for doc in docs)


def spec(**fields: Any) -> HelmReleaseSpec:
    return HelmReleaseSpec.model_validate(
        {"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "web"}, **fields})


# --------------------------------------------------------------------------- post_render


def test_objects_carry_the_origin_labels_of_the_helm_release() -> None:
    out = documents(post_render(stream(DEPLOYMENT, CONFIGMAP), config()))
    for obj in out:
        assert obj["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
        assert obj["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"] == "apps"
    # only metadata: selectors and pod templates are left alone
    assert out[0]["spec"]["selector"]["matchLabels"] == {"app": "web"}
    assert out[0]["spec"]["template"]["metadata"]["labels"] == {"app": "web"}


def test_a_strategic_merge_patch_applies_to_its_target() -> None:
    renderers = [{"kustomize": {"patches": [REPLICAS_PATCH]}}]
    out = documents(post_render(stream(DEPLOYMENT, CONFIGMAP), config(
        post_renderers=renderers)))
    assert out[0]["spec"]["replicas"] == 3
    assert out[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    assert out[1]["data"] == {"mode": "fast"}


def test_a_json_6902_patch_applies_to_the_objects_its_target_selects() -> None:
    patch = {"patch": '[{"op": "add", "path": "/data/extra", "value": "1"}]',
             "target": {"kind": "ConfigMap", "name": "settings"}}
    out = documents(post_render(stream(DEPLOYMENT, CONFIGMAP), config(
        post_renderers=[{"kustomize": {"patches": [patch]}}])))
    assert out[1]["data"] == {"mode": "fast", "extra": "1"}
    assert "extra" not in json.dumps(out[0])


def test_images_are_rewritten() -> None:
    images = [{"name": "nginx", "newName": "registry.local/nginx", "newTag": "1.27"}]
    out = documents(post_render(DEPLOYMENT, config(
        post_renderers=[{"kustomize": {"images": images}}])))
    assert out[0]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.local/nginx:1.27"


def test_post_renderers_run_in_order_each_on_the_last_ones_output() -> None:
    first = {"kustomize": {"patches": [{
        "patch": '[{"op": "add", "path": "/data/step", "value": "one"}]',
        "target": {"kind": "ConfigMap"}}]}}
    second = {"kustomize": {"patches": [{
        "patch": '[{"op": "test", "path": "/data/step", "value": "one"},'
                 ' {"op": "replace", "path": "/data/step", "value": "two"}]',
        "target": {"kind": "ConfigMap"}}]}}
    out = documents(post_render(CONFIGMAP, config(post_renderers=[first, {}, second])))
    assert out[0]["data"]["step"] == "two"


def test_common_metadata_lands_on_every_objects_metadata_only() -> None:
    common = {"labels": {"team": "web"}, "annotations": {"owner": "ops <ops@example.com>"}}
    out = documents(post_render(stream(DEPLOYMENT, CONFIGMAP), config(common_metadata=common)))
    for obj in out:
        assert obj["metadata"]["labels"]["team"] == "web"
        assert obj["metadata"]["annotations"] == {"owner": "ops <ops@example.com>"}
    template = out[0]["spec"]["template"]["metadata"]
    assert "annotations" not in template and "team" not in template["labels"]


def test_origin_labels_win_over_common_metadata() -> None:
    common = {"labels": {"helm.toolkit.fluxcd.io/name": "someone-else", "team": "web"}}
    out = documents(post_render(CONFIGMAP, config(common_metadata=common)))
    assert out[0]["metadata"]["labels"] == {
        "helm.toolkit.fluxcd.io/name": "web", "team": "web",
        "helm.toolkit.fluxcd.io/namespace": "apps"}


def test_document_order_is_kept_not_sorted_by_kind() -> None:
    service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: []\n"
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n"
    renderers = [{"kustomize": {"patches": [REPLICAS_PATCH]}}]
    out = documents(post_render(stream(DEPLOYMENT, service, namespace),
                                config(post_renderers=renderers)))
    assert [obj["kind"] for obj in out] == ["Deployment", "Service", "Namespace"]


def test_helms_filename_annotation_survives() -> None:
    annotated = CONFIGMAP.replace(
        "  name: settings\n",
        "  name: settings\n  annotations:\n"
        "    postrenderer.helm.sh/postrender-filename: web/templates/cm.yaml\n")
    out = documents(post_render(annotated, config(
        common_metadata={"annotations": {"a": "b"}})))
    assert out[0]["metadata"]["annotations"] == {
        "postrenderer.helm.sh/postrender-filename": "web/templates/cm.yaml", "a": "b"}


def test_empty_documents_are_skipped_and_no_objects_give_an_empty_stream() -> None:
    assert post_render("", config()) == ""
    assert post_render("---\n---\n# only a comment\n", config()) == ""
    out = documents(post_render(f"---\n---\n{CONFIGMAP}---\n", config()))
    assert [obj["metadata"]["name"] for obj in out] == ["settings"]


def test_strings_a_yaml_reader_could_mistake_are_quoted() -> None:
    tricky = ["on", "yes", "y", "0o17", "012", "1e3", "1.0", "null", "~", "", "a: b",
              "- x", "#c", "2024-01-01", "line\nbreak", "tab\there", "\u2028", "é"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "t"},
          "data": {f"k{i}": value for i, value in enumerate(tricky)}}
    text = post_render(json.dumps(cm), config())
    data = documents(text)[0]["data"]
    assert data == cm["data"]
    # go-yaml v2 reads y, on, 0o17 as booleans and numbers: each must be quoted
    for value in ("on", "y", "0o17"):
        assert f'"{value}"' in text


def test_manifests_too_large_are_refused() -> None:
    with pytest.raises(PostRenderError, match="larger than"):
        post_render("#" * (MAX_MANIFEST_BYTES + 1), config())


@pytest.mark.parametrize(("manifests", "error"), [
    ("- a list\n", "not an object"),
    ("just a string\n", "not an object"),
    ("apiVersion: v1\nkind: ConfigMap\n", "without apiVersion, kind and metadata"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "without a name"),
    ("a: [unclosed\n", "YAML"),
    ("a: &a [*a, *a]\n", "YAML|alias"),
])
def test_documents_that_are_not_named_objects_are_refused(manifests: str, error: str) -> None:
    with pytest.raises(PostRenderError, match=error):
        post_render(manifests, config())


def test_an_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata:\n" + "".join(
        f"  {line}\n" for line in lines)
    with pytest.raises(PostRenderError, match="alias"):
        post_render(bomb, config())


def test_a_patch_the_engine_cannot_apply_fails_with_its_reason() -> None:
    patch = {"patch": '[{"op": "replace", "path": "/data/missing", "value": "1"}]',
             "target": {"kind": "ConfigMap"}}
    with pytest.raises(PostRenderError, match=r"postRenderers\[0\]\.kustomize: .*engine"):
        post_render(CONFIGMAP, config(post_renderers=[{"kustomize": {"patches": [patch]}}]))


# --------------------------------------------------------------------------- strategies


def test_combined_renders_hooks_with_the_manifests() -> None:
    renderers = [{"kustomize": {"images": [{"name": "nginx", "newTag": "2"}]}}]
    out = documents(post_render(stream(DEPLOYMENT.replace("name: web\n  labels",
                                                          "name: hooked\n  annotations: "
                                                          "{helm.sh/hook: pre-install}\n"
                                                          "  labels"), CONFIGMAP),
                                config(post_renderers=renderers)))
    assert out[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert out[0]["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"


def test_combined_refuses_a_hook_and_a_manifest_with_one_id_as_kustomize_does() -> None:
    renderers = [{"kustomize": {"patches": [REPLICAS_PATCH]}}]
    with pytest.raises(PostRenderError, match="two objects"):
        post_render(stream(CONFIGMAP, HOOK, DEPLOYMENT), config(post_renderers=renderers))


def test_separate_renders_hooks_apart_from_the_manifests() -> None:
    renderers = [{"kustomize": {"patches": [REPLICAS_PATCH]}}]
    out = documents(post_render(stream(HOOK, CONFIGMAP, DEPLOYMENT), config(
        post_renderers=renderers, strategy="separate")))
    assert [(o["kind"], o["data"]["mode"] if "data" in o else None) for o in out] == [
        ("ConfigMap", "fast"), ("Deployment", None), ("ConfigMap", "hook")]
    assert out[1]["spec"]["replicas"] == 3
    assert all("helm.toolkit.fluxcd.io/name" in o["metadata"]["labels"] for o in out)


def test_nohooks_leaves_hooks_untouched() -> None:
    out = documents(post_render(stream(HOOK, DEPLOYMENT), config(
        strategy="nohooks", common_metadata={"labels": {"team": "web"}})))
    hook = next(o for o in out if o["kind"] == "ConfigMap")
    assert hook == yaml.safe_load(HOOK)
    deployment = next(o for o in out if o["kind"] == "Deployment")
    assert deployment["metadata"]["labels"]["team"] == "web"


# --------------------------------------------------------------------------- config


def test_the_config_of_a_spec_round_trips_through_json() -> None:
    made = PostRenderConfig.from_spec("web", "apps", spec(
        postRenderers=[{"kustomize": {"patches": [REPLICAS_PATCH],
                                      "images": [{"name": "nginx", "newTag": "2"}]}}],
        commonMetadata={"labels": {"team": "web"}}, postRenderStrategy="nohooks"))
    assert made.post_renderers == [{"kustomize": {
        "patches": [REPLICAS_PATCH], "images": [{"name": "nginx", "newTag": "2"}]}}]
    assert made.common_metadata == {"labels": {"team": "web"}}
    assert made.strategy == "nohooks"
    assert PostRenderConfig.from_json(made.to_json()) == made
    assert PostRenderConfig.from_spec("web", "apps", spec()).strategy == "combined"


def test_the_config_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    config().write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PostRenderConfig.from_json(path.read_bytes()) == config()


@pytest.mark.parametrize(("data", "error"), [
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"name": "a"}', "without name and namespace"),
    (b'{"name": "a", "namespace": "b", "postRenderers": {}}', "not a list"),
    (b'{"name": "a", "namespace": "b", "commonMetadata": []}', "not an object"),
    (b'{"name": "a", "namespace": "b", "postRenderStrategy": "all"}', "unknown"),
    (b" " * (5 << 20), "larger than"),
])
def test_a_bad_config_is_refused(data: bytes, error: str) -> None:
    with pytest.raises(PostRenderError, match=error):
        PostRenderConfig.from_json(data)


# --------------------------------------------------------------------------- digests


def go_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_the_post_renderers_digest_hashes_gos_json_encoding() -> None:
    given = spec(postRenderers=[
        {"kustomize": {
            "patches": [{"patch": "a<b & c>d", "target": {"labelSelector": "x", "kind": "D"}},
                        {"patch": "p", "target": {}}, {"patch": "q"}],
            "images": [{"name": "nginx", "digest": "sha256:1", "newTag": ""}]}},
        {"kustomize": {}}, {}])
    # Go: struct fields in declaration order, omitempty, HTML escaped, a final newline
    assert post_renderers_digest(given) == go_digest(
        '[{"kustomize":{"patches":[{"patch":"a\\u003cb \\u0026 c\\u003ed",'
        '"target":{"kind":"D","labelSelector":"x"}},{"patch":"p","target":{}},'
        '{"patch":"q"}],"images":[{"name":"nginx","digest":"sha256:1"}]}},'
        '{"kustomize":{}},{}]\n')
    assert post_renderers_digest(spec(postRenderers=[])) == go_digest("[]\n")
    assert post_renderers_digest(spec()) is None


def test_the_common_metadata_digest_hashes_gos_json_encoding() -> None:
    given = spec(commonMetadata={"labels": {"b": "2", "a": "1"}, "annotations": {"z": "é"}})
    assert common_metadata_digest(given) == go_digest(
        '{"annotations":{"z":"é"},"labels":{"a":"1","b":"2"}}\n')
    assert common_metadata_digest(spec(commonMetadata={})) == go_digest("{}\n")
    assert common_metadata_digest(spec()) is None


# --------------------------------------------------------------------------- plugin


def test_installing_the_plugin_is_idempotent(tmp_path: Path) -> None:
    assert install_plugin(tmp_path) == PLUGIN_NAME
    path = tmp_path / PLUGIN_NAME / "plugin.yaml"
    first = path.stat().st_mtime_ns
    written = yaml.safe_load(path.read_text())
    assert written["type"] == "postrenderer/v1"
    assert written["runtimeConfig"]["platformCommand"] == [
        {"command": sys.executable, "args": ["-m", "fluxd", "helm-post-render"]}]
    assert install_plugin(tmp_path) == PLUGIN_NAME
    assert path.stat().st_mtime_ns == first
    assert os.listdir(tmp_path / PLUGIN_NAME) == ["plugin.yaml"]


@pytest.mark.parametrize("python", ["python3", "/opt/my python/bin/python", "/opt/$HOME/py"])
def test_a_python_helm_would_split_or_expand_is_refused(tmp_path: Path, python: str) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        install_plugin(tmp_path, python=python)


def test_the_helm_arguments_name_the_plugin_and_the_config() -> None:
    assert post_renderer_argv("p", Path("/x/c.json")) == [
        "--post-renderer", "p", "--post-renderer-args", "/x/c.json"]


def test_the_command_writes_the_post_rendered_manifests(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    config().write(path)
    out, err = io.StringIO(), io.StringIO()
    assert run_command([str(path)], io.BytesIO(CONFIGMAP.encode()), out, err) == 0
    assert documents(out.getvalue())[0]["metadata"]["labels"][
        "helm.toolkit.fluxcd.io/name"] == "web"
    assert err.getvalue() == "" and read_error(path) is None


def test_the_command_reports_an_error_on_stderr_and_beside_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    config().write(path)
    out, err = io.StringIO(), io.StringIO()
    assert run_command([str(path)], io.BytesIO(b"- not an object\n"), out, err) == 1
    assert out.getvalue() == ""
    assert "not an object" in err.getvalue()
    assert "not an object" in (read_error(path) or "")
    assert stat.S_IMODE(error_path(path).stat().st_mode) == 0o600
    # a later success clears it
    assert run_command([str(path)], io.BytesIO(b""), out, err) == 0
    assert read_error(path) is None


def test_the_command_refuses_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    config().write(path)
    err = io.StringIO()
    assert run_command([str(path)], io.BytesIO(b"\xff\xfe"), io.StringIO(), err) == 1
    assert "UTF-8" in err.getvalue()


def test_the_command_without_a_config_prints_its_usage(tmp_path: Path) -> None:
    err = io.StringIO()
    assert run_command([], io.BytesIO(), io.StringIO(), err) == 2
    assert "usage" in err.getvalue()
    assert run_command([str(tmp_path / "missing.json")], io.BytesIO(), io.StringIO(), err) == 1


def test_the_cli_routes_the_hidden_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    config().write(path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(CONFIGMAP.encode())))
    assert main(["helm-post-render", str(path)]) == 0
    assert "helm.toolkit.fluxcd.io/namespace: apps" in capsys.readouterr().out


# --------------------------------------------------------------------------- real helm

HOOK_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-hook
  annotations:
    helm.sh/hook: post-install
    helm.sh/hook-delete-policy: before-hook-creation
data:
  phase: hook
"""


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = write_chart(tmp_path, "web", "0.1.0")
    (root / "templates" / "deployment.yaml").write_text(
        DEPLOYMENT.replace("name: web\n  labels", "name: {{ .Release.Name }}\n  labels"))
    (root / "templates" / "hook.yaml").write_text(HOOK_TEMPLATE)
    return root


def helm(tmp_path: Path, *args: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    plugins = tmp_path / "helm-plugins"
    install_plugin(plugins)
    full = {**(env or os.environ),
            "HELM_PLUGINS": str(plugins),
            "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
            "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
            "HELM_DATA_HOME": str(tmp_path / "helm-data")}
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, env=full,
                          cwd=tmp_path, timeout=180, check=False)


def release_config(tmp_path: Path, namespace: str = "apps") -> Path:
    path = tmp_path / "postrender.json"
    PostRenderConfig.from_spec("web", namespace, spec(
        postRenderers=[{"kustomize": {
            "patches": [REPLICAS_PATCH],
            "images": [{"name": "nginx", "newName": "registry.local/nginx",
                        "newTag": "1.27"}]}}],
        commonMetadata={"labels": {"team": "web"}, "annotations": {"owner": "ops"}},
    )).write(path)
    return path


def test_helm_template_runs_the_plugin(tmp_path: Path, chart: Path) -> None:
    path = release_config(tmp_path)
    done = helm(tmp_path, "template", "rel", str(chart), *post_renderer_argv(PLUGIN_NAME, path))
    assert done.returncode == 0, done.stderr
    out = {(o["kind"], o["metadata"]["name"]): o for o in documents(done.stdout)}
    assert set(out) == {("ConfigMap", "rel"), ("Deployment", "rel"), ("ConfigMap", "rel-hook")}
    for obj in out.values():
        meta = obj["metadata"]
        assert meta["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
        assert meta["labels"]["team"] == "web"
        assert meta["annotations"]["owner"] == "ops"
        # helm took its filename annotation back
        assert "postrenderer.helm.sh/postrender-filename" not in meta["annotations"]
    deployment = out[("Deployment", "rel")]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.local/nginx:1.27"


def test_helm_shows_a_failed_post_render_and_the_reason_is_kept(tmp_path: Path,
                                                                chart: Path) -> None:
    path = tmp_path / "postrender.json"
    config(post_renderers=[{"kustomize": {"patches": [{
        "patch": '[{"op": "remove", "path": "/spec/nothing"}]',
        "target": {"kind": "Deployment"}}]}}]).write(path)
    done = helm(tmp_path, "template", "rel", str(chart), *post_renderer_argv(PLUGIN_NAME, path))
    assert done.returncode != 0
    assert PLUGIN_NAME in done.stderr
    assert "postRenderers[0].kustomize" in (read_error(path) or "")


def test_helm_install_applies_the_post_rendered_objects(cluster: Cluster, namespace: str,
                                                        tmp_path: Path, chart: Path) -> None:
    path = release_config(tmp_path, namespace)
    done = helm(tmp_path, "install", "rel", str(chart), "--namespace", namespace,
                *post_renderer_argv(PLUGIN_NAME, path), env=cluster.env())
    assert done.returncode == 0, done.stderr
    deployment = cluster.kubectl_json("get", "deployment", "rel", "-n", namespace)
    assert deployment["metadata"]["labels"] == {
        "app": "web", "team": "web", "helm.toolkit.fluxcd.io/name": "web",
        "helm.toolkit.fluxcd.io/namespace": namespace,
        "app.kubernetes.io/managed-by": "Helm"}
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.local/nginx:1.27"
    configmap = cluster.kubectl_json("get", "configmap", "rel", "-n", namespace)
    assert configmap["metadata"]["annotations"]["owner"] == "ops"
    hook = cluster.kubectl_json("get", "configmap", "rel-hook", "-n", namespace)
    assert hook["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
    assert hook["data"]["phase"] == "hook"


@pytest.mark.anyio
async def test_the_socket_plugin_hands_the_manifests_to_the_fluxd_process(
        tmp_path: Path, chart: Path) -> None:
    root = tmp_path / "work"
    root.mkdir()
    inside = release_config(root)
    outside = release_config(tmp_path)
    plugins = tmp_path / "socket-plugins"
    env = {**os.environ, "HELM_PLUGINS": str(plugins),
           "HELM_CACHE_HOME": str(tmp_path / "hc"), "HELM_CONFIG_HOME": str(tmp_path / "hcf"),
           "HELM_DATA_HOME": str(tmp_path / "hd")}

    def template(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool("helm"), "template", "rel", str(chart),
                               *post_renderer_argv(PLUGIN_NAME, config)], capture_output=True,
                              text=True, env=env, timeout=120, check=False)

    async with serve(tmp_path / "pr.sock", root=root, clock=SystemClock()) as socket:
        assert stat.S_IMODE(os.stat(socket).st_mode) == 0o600
        install_plugin(plugins, socket=socket)
        assert (plugins / PLUGIN_NAME / "client.py").exists()
        done = await asyncio.to_thread(template, inside)
        assert done.returncode == 0, done.stderr
        deployment = next(o for o in documents(done.stdout) if o["kind"] == "Deployment")
        assert deployment["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
        assert deployment["spec"]["replicas"] == 3
        # a configuration fluxd did not write (outside its scratch root) is refused
        refused = await asyncio.to_thread(template, outside)
        assert refused.returncode != 0
        assert "is not a configuration fluxd wrote" in (read_error(outside) or "")
    assert not (tmp_path / "pr.sock").exists()
