"""HelmChart end to end: the real manager and cluster fixture, charts from a static Helm
repository and a real registry (both filled with the real helm CLI), and from a real git
server; packaging with the real helm CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.artifacts.bus import ArtifactEvent
from fluxd.controllers.source.chartbuild import Build, BuildOptions, merge_maps
from fluxd.controllers.source.chartdeps import Dependency, _collect_missing
from fluxd.kube import Invalid, NotFound
from tests.conftest import tool
from tests.controllers.conftest import Flux, condition
from tests.support.gitserver import GitServer, commit, head
from tests.support.helmrepo import BasicAuth, HelmCLI, HelmRepoServer, write_chart
from tests.support.registry import Registry, RegistryUnavailable, ensure_registry

pytestmark = pytest.mark.anyio

API = "source.toolkit.fluxcd.io/v1"
KIND = "HelmChart"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def helm(tmp_path: Path) -> HelmCLI:
    return HelmCLI(tool("helm"), tmp_path / "helm-home")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[HelmRepoServer]:
    with HelmRepoServer(tmp_path / "charts") as srv:
        yield srv


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    try:
        ensure_registry()
    except RegistryUnavailable as exc:
        pytest.fail(f"{exc}; the Makefile's test target installs it")
    reg = Registry(tmp_path / "registry").start()
    try:
        yield reg
    finally:
        reg.stop()


# --------------------------------------------------------------------------- helpers


def publish(helm: HelmCLI, server: HelmRepoServer, *charts: tuple[str, str],
            url: str | None = None) -> Path:
    """Package ``(name, version)`` charts into the server's directory and index them."""
    work = server.root.parent / "chart-src"
    for name, version in charts:
        chart = write_chart(work, name, version)
        (chart / "values-prod.yaml").write_text("greeting: hello from prod\nreplicas: 3\n")
        helm.package(chart, server.root)
    return helm.index(server.root, url or server.url)


def helmrepo(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "HelmRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, **spec}}


def gitrepo(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"}, **spec}}


def helmchart(name: str, namespace: str, chart: str, source: str,
              kind: str = "HelmRepository", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": KIND, "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "chart": chart,
                     "sourceRef": {"kind": kind, "name": source}, **spec}}


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def failed(type_: str, reason: str | None = None) -> Any:
    return lambda obj: condition(obj, type_).get("status") == "True" and (
        reason is None or condition(obj, type_).get("reason") == reason)


def version_is(version: str) -> Any:
    return lambda obj: ready(obj) and (obj.get("status") or {}).get(
        "artifact", {}).get("revision") == version


async def request(flux: Flux, kind: str, name: str, namespace: str, value: str) -> None:
    await flux.client.merge_patch(API, kind, name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": value}}}, namespace)


async def events(flux: Flux, namespace: str, reason: str, name: str | None = None
                 ) -> list[str]:
    listed = await flux.client.list_all("v1", "Event", namespace)
    return [e["message"] for e in listed.items if e["reason"] == reason
            and (name is None or e["involvedObject"]["name"] == name)]


async def secret(flux: Flux, namespace: str, name: str, data: dict[str, bytes]) -> None:
    await flux.client.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": {"name": name, "namespace": namespace},
                             "data": {k: base64.b64encode(v).decode()
                                      for k, v in data.items()}})


def chart_files(flux: Flux, obj: dict[str, Any]) -> dict[str, bytes]:
    with tarfile.open(flux.storage / obj["status"]["artifact"]["path"]) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def chart_yaml(files: dict[str, bytes], path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(files[path])
    return loaded


# --------------------------------------------------------------------------- units


def test_build_summary_reads_as_flux_writes_it() -> None:
    assert Build().summary() == "no chart build"
    assert Build(name="podinfo", version="6.0.0").summary() == \
        "new 'podinfo' chart with version '6.0.0'"
    assert Build(name="podinfo", version="6.0.0", path=Path("x.tgz")).summary() == \
        "pulled 'podinfo' chart with version '6.0.0'"
    assert Build(name="app", version="1.0.0+3", path=Path("x.tgz"), packaged=True,
                 values_files=["values.yaml", "prod.yaml"]).summary() == (
        "packaged 'app' chart with version '1.0.0+3' and merged values files "
        "[values.yaml prod.yaml]")


def test_values_yaml_alone_is_no_values_files() -> None:
    assert BuildOptions(values_files=["./values.yaml"]).effective_values_files() == []
    assert BuildOptions(values_files=["values.yaml", "a.yaml"]).effective_values_files() == [
        "values.yaml", "a.yaml"]


def test_values_merge_deeply_and_replace_everything_but_maps() -> None:
    assert merge_maps({"a": {"b": 1, "c": [1]}, "d": 1},
                      {"a": {"c": [2], "e": None}, "d": {"x": 1}}) == {
        "a": {"b": 1, "c": [2], "e": None}, "d": {"x": 1}}


def test_dependencies_count_as_present_when_the_numbers_agree_as_in_flux() -> None:
    requested = [Dependency("redis", "1.x", "https://charts.example.com"),
                 Dependency("common", "0.1.0", "file://../common", alias="lib")]
    assert _collect_missing([], requested) == {"redis": requested[0], "lib": requested[1]}
    assert _collect_missing(["redis"], requested) == {"lib": requested[1]}
    assert _collect_missing(["x", "y"], requested) == {}  # Flux's count shortcut


# --------------------------------------------------------------------------- Helm repository


async def test_latest_stable_version_is_pulled_as_published_and_stored_under_its_version(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"), ("podinfo", "6.1.0"),
            ("podinfo", "6.2.0-rc.1"), ("redis", "1.0.0"))
    seen: list[ArtifactEvent] = []
    unsubscribe = flux.context.artifact_bus.subscribe(seen.append)
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "charts"))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
    unsubscribe()
    assert obj["spec"]["version"] == "*"  # the CRD's default
    artifact = obj["status"]["artifact"]
    assert artifact["revision"] == "6.1.0"
    assert artifact["path"] == f"helmchart/{namespace}/podinfo/podinfo-6.1.0.tgz"
    stored = flux.storage / artifact["path"]
    published = (server.root / "podinfo-6.1.0.tgz").read_bytes()
    assert stored.read_bytes() == published  # pulled as the repository sent it
    assert artifact["digest"] == f"sha256:{hashlib.sha256(published).hexdigest()}"
    link = stored.with_name("latest.tar.gz")
    assert link.is_symlink() and os.readlink(link) == stored.name
    assert obj["status"]["url"] == artifact["url"].rsplit("/", 1)[0] + "/latest.tar.gz"
    repo = await flux.get(API, "HelmRepository", "charts", namespace)
    assert obj["status"]["observedSourceArtifactRevision"] == \
        repo["status"]["artifact"]["revision"]
    assert obj["status"]["observedChartName"] == "podinfo"
    assert "observedValuesFiles" not in obj["status"]
    summary = "pulled 'podinfo' chart with version '6.1.0'"
    for type_ in ("Ready", "ArtifactInStorage"):
        assert (condition(obj, type_)["reason"], condition(obj, type_)["message"]) == (
            "ChartPullSucceeded", summary)
    assert not condition(obj, "Reconciling") and not condition(obj, "ArtifactOutdated")
    assert await events(flux, namespace, "ChartPullSucceeded", "podinfo") == [summary]
    assert ("HelmChart", "podinfo", "6.1.0") in [
        (e.source.kind, e.source.name, e.revision) for e in seen]
    table = await flux.client.list_all(API, KIND, namespace)
    assert [o["metadata"]["name"] for o in table.items] == ["podinfo"]


async def test_exact_versions_and_ranges_select_what_flux_selects(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "5.2.1"), ("podinfo", "6.0.0"), ("podinfo", "6.0.3"),
            ("podinfo", "6.1.0"), ("podinfo", "7.0.0-beta.1"))
    await flux.client.create(helmrepo("charts", namespace, server.url))
    wanted = {"exact": ("6.0.0", "6.0.0"), "patches": ("6.0.x", "6.0.3"),
              "range": (">=5.0.0 <6.1.0", "6.0.3"), "caret": ("^5", "5.2.1"),
              "prerelease": ("7.0.0-beta.1", "7.0.0-beta.1"),
              "pre-range": (">=7.0.0-0", "7.0.0-beta.1")}
    for name, (version, _) in wanted.items():
        await flux.client.create(helmchart(name, namespace, "podinfo", "charts",
                                           version=version))
    for name, (_, expected) in wanted.items():
        obj = await flux.wait(API, KIND, name, namespace, ready)
        assert obj["status"]["artifact"]["revision"] == expected, name


async def test_versions_differing_in_build_metadata_go_to_the_newest_created(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    work = server.root.parent / "src"
    for build in ("old", "new"):
        helm.package(write_chart(work, "app", f"1.0.0+{build}"), server.root)
    # the older one listed last and last alphabetically: only ``created`` picks "new"
    index = {"apiVersion": "v1", "entries": {"app": [
        {"apiVersion": "v2", "name": "app", "version": "1.0.0+new",
         "created": "2024-05-01T10:00:00.123456789Z", "urls": ["app-1.0.0+new.tgz"]},
        {"apiVersion": "v2", "name": "app", "version": "1.0.0+old",
         "created": "2024-04-01T10:00:00Z", "urls": ["app-1.0.0+old.tgz"]},
    ]}}
    (server.root / "index.yaml").write_text(yaml.safe_dump(index))
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("app", namespace, "app", "charts", version="1.0.0"))
    obj = await flux.wait(API, KIND, "app", namespace, ready)
    assert obj["status"]["artifact"]["revision"] == "1.0.0+new"


async def test_a_missing_version_stalls_until_the_repository_publishes_it(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "charts",
                                       version="9.x"))
    stalled = await flux.wait(API, KIND, "podinfo", namespace, failed("Stalled"))
    message = ("invalid chart reference: failed to get chart version for remote reference: "
               "no 'podinfo' chart with version matching '9.x' found")
    for type_ in ("FetchFailed", "Stalled", "Ready"):
        assert (condition(stalled, type_)["reason"], condition(stalled, type_)["message"]) \
            == ("InvalidChartReference", message), type_
    assert "artifact" not in stalled["status"]
    # the repository's next index reaches the chart over the bus, stalled or not
    publish(helm, server, ("podinfo", "9.1.0"))
    await request(flux, "HelmRepository", "charts", namespace, "new-index")
    obj = await flux.wait(API, KIND, "podinfo", namespace, version_is("9.1.0"))
    assert not condition(obj, "Stalled") and not condition(obj, "FetchFailed")


@pytest.mark.parametrize(("chart", "message"), [
    ("redis", "invalid chart reference: failed to get chart version for remote reference: "
              "no chart name found"),
    ("Not_A_Chart", "invalid chart reference: invalid chart name 'Not_A_Chart': a valid name "
                    "must be lower case letters and numbers and MAY be separated with dashes "
                    "(-), slashes (/) or periods (.)"),
])
async def test_an_unknown_or_invalid_chart_name_stalls(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str, chart: str,
        message: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("bad", namespace, chart, "charts"))
    stalled = await flux.wait(API, KIND, "bad", namespace, failed("Stalled"))
    assert condition(stalled, "FetchFailed")["message"] == message
    assert stalled["status"]["observedGeneration"] == stalled["metadata"]["generation"]


async def test_charts_are_downloaded_with_the_repository_credentials(
        flux: Flux, helm: HelmCLI, tmp_path: Path, namespace: str) -> None:
    auth = BasicAuth("helm-user", "s3cret")
    with HelmRepoServer(tmp_path / "private", auth=auth) as srv:
        publish(helm, srv, ("podinfo", "6.0.0"))
        await secret(flux, namespace, "creds", {"username": b"helm-user",
                                                "password": b"s3cret"})
        await flux.client.create(helmrepo("private", namespace, srv.url,
                                          secretRef={"name": "creds"}))
        await flux.client.create(helmchart("podinfo", namespace, "podinfo", "private"))
        obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
        assert obj["status"]["artifact"]["revision"] == "6.0.0"
        assert srv.requests("/podinfo-6.0.0.tgz") == 1


async def test_credentials_reach_another_host_only_with_pass_credentials(
        flux: Flux, helm: HelmCLI, tmp_path: Path, namespace: str) -> None:
    auth = BasicAuth("helm-user", "s3cret")
    with HelmRepoServer(tmp_path / "index", auth=auth) as index_host, \
            HelmRepoServer(tmp_path / "files", auth=auth) as chart_host:
        # the index lives on one host and points at the archives on another
        index = publish(helm, chart_host, ("podinfo", "6.0.0"), url=chart_host.url)
        shutil.copy(index, index_host.root / "index.yaml")
        await secret(flux, namespace, "creds", {"username": b"helm-user",
                                                "password": b"s3cret"})
        await flux.client.create(helmrepo("split", namespace, index_host.url,
                                          secretRef={"name": "creds"}))
        await flux.client.create(helmchart("podinfo", namespace, "podinfo", "split"))
        refused = await flux.wait(API, KIND, "podinfo", namespace,
                                  failed("FetchFailed", "ChartPullError"))
        assert condition(refused, "FetchFailed")["message"] == (
            "chart pull error: failed to download chart for remote reference: failed to "
            f"fetch {chart_host.url}/podinfo-6.0.0.tgz : 401 Unauthorized")
        assert "s3cret" not in str(refused)

        await flux.client.merge_patch(API, "HelmRepository", "split",
                                      {"spec": {"passCredentials": True}}, namespace)
        await request(flux, KIND, "podinfo", namespace, "pass")
        obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
        assert obj["status"]["artifact"]["revision"] == "6.0.0"


async def test_a_chart_that_does_not_match_the_index_digest_or_is_too_big_is_refused(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    archive = server.root / "podinfo-6.0.0.tgz"
    archive.write_bytes(archive.read_bytes() + b"\0")
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "charts"))
    refused = await flux.wait(API, KIND, "podinfo", namespace,
                              failed("FetchFailed", "ChartPullError"))
    assert "the index says sha256:" in condition(refused, "FetchFailed")["message"]

    publish(helm, server, ("podinfo", "6.0.0"))  # consistent again
    flux.context.settings.helm.chart_max_size = 100
    await request(flux, "HelmRepository", "charts", namespace, "reindexed")
    too_big = await flux.wait(API, KIND, "podinfo", namespace, lambda o: (
        "exceeds" in condition(o, "FetchFailed").get("message", "")))
    assert condition(too_big, "FetchFailed")["message"].endswith(
        "chart exceeds the maximum chart file size of 100 bytes")


async def test_values_files_in_a_pulled_chart_are_merged_and_versioned_by_generation(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "charts",
                                       valuesFiles=["values.yaml", "values-prod.yaml"]))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
    assert obj["status"]["artifact"]["revision"] == "6.0.0+1"
    assert obj["status"]["artifact"]["path"].endswith("/podinfo-6.0.0+1.tgz")
    files = chart_files(flux, obj)
    assert yaml.safe_load(files["podinfo/values.yaml"]) == {
        "greeting": "hello from prod", "replicas": 3}
    assert chart_yaml(files, "podinfo/Chart.yaml")["version"] == "6.0.0+1"
    summary = ("packaged 'podinfo' chart with version '6.0.0+1' and merged values files "
               "[values.yaml values-prod.yaml]")
    assert (condition(obj, "Ready")["reason"], condition(obj, "Ready")["message"]) == (
        "ChartPackageSucceeded", summary)
    assert await events(flux, namespace, "ChartPackageSucceeded") == [summary]

    await flux.client.merge_patch(API, KIND, "podinfo", {"spec": {
        "valuesFiles": ["values-prod.yaml"]}}, namespace)
    second = await flux.wait(API, KIND, "podinfo", namespace, version_is("6.0.0+2"))
    assert yaml.safe_load(chart_files(flux, second)["podinfo/values.yaml"]) == {
        "greeting": "hello from prod", "replicas": 3}


# --------------------------------------------------------------------------- OCI


def push_chart(helm: HelmCLI, registry: Registry, work: Path, name: str, version: str) -> Path:
    """``helm package`` + ``helm push --plain-http`` to ``oci://<registry>/charts``."""
    archive = helm.package(write_chart(work, name, version), work / "packages")
    helm.run("push", archive, f"oci://{registry.address}/charts", "--plain-http")
    return archive


async def test_charts_from_an_oci_helm_repository_by_version_range_and_build_metadata(
        flux: Flux, helm: HelmCLI, registry: Registry, tmp_path: Path,
        namespace: str) -> None:
    work = tmp_path / "oci-src"
    push_chart(helm, registry, work, "podinfo", "6.0.0")
    latest = push_chart(helm, registry, work, "podinfo", "6.1.0")
    push_chart(helm, registry, work, "podinfo", "6.2.0-rc.1")
    push_chart(helm, registry, work, "app", "1.0.0+abc")  # stored under tag 1.0.0_abc
    await flux.client.create(helmrepo("oci", namespace, f"oci://{registry.address}/charts",
                                      type="oci", insecure=True))
    await flux.client.create(helmchart("latest", namespace, "podinfo", "oci"))
    await flux.client.create(helmchart("exact", namespace, "podinfo", "oci", version="6.0.0"))
    await flux.client.create(helmchart("ranged", namespace, "app", "oci", version="1.x"))
    obj = await flux.wait(API, KIND, "latest", namespace, ready)
    assert obj["status"]["artifact"]["revision"] == "6.1.0"
    assert (flux.storage / obj["status"]["artifact"]["path"]).read_bytes() == \
        latest.read_bytes()  # the chart layer as pushed
    assert "observedSourceArtifactRevision" not in obj["status"]  # no source artifact
    assert condition(obj, "Ready")["message"] == "pulled 'podinfo' chart with version '6.1.0'"
    exact = await flux.wait(API, KIND, "exact", namespace, ready)
    assert exact["status"]["artifact"]["revision"] == "6.0.0"
    ranged = await flux.wait(API, KIND, "ranged", namespace, ready)
    assert ranged["status"]["artifact"]["revision"] == "1.0.0+abc"
    assert ranged["status"]["artifact"]["path"].endswith("/app-1.0.0+abc.tgz")


async def test_an_oci_chart_without_a_matching_tag_fails_the_pull(
        flux: Flux, helm: HelmCLI, registry: Registry, tmp_path: Path,
        namespace: str) -> None:
    push_chart(helm, registry, tmp_path / "oci-src", "podinfo", "6.0.0")
    await flux.client.create(helmrepo("oci", namespace, f"oci://{registry.address}/charts",
                                      type="oci", insecure=True))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "oci",
                                       version=">=7.0.0"))
    obj = await flux.wait(API, KIND, "podinfo", namespace,
                          failed("FetchFailed", "ChartPullError"))
    assert condition(obj, "FetchFailed")["message"] == (
        "chart pull error: failed to get chart version for remote reference: could not "
        "locate a version matching provided version string >=7.0.0")
    assert not condition(obj, "Stalled")  # the registry may get it: retried


async def test_an_oci_helm_repository_pulls_with_the_credentials_of_its_secret(
        flux: Flux, helm: HelmCLI, tmp_path: Path, namespace: str) -> None:
    try:
        ensure_registry()
    except RegistryUnavailable as exc:
        pytest.fail(f"{exc}; the Makefile's test target installs it")
    user, password = "chart-pusher", "s3cr3t-Pa55"
    reg = Registry(tmp_path / "private", users={user: password}).start()
    try:
        helm.run("registry", "login", reg.address, "--plain-http", "--username", user,
                 "--password", password)
        push_chart(helm, reg, tmp_path / "src", "podinfo", "6.0.0")
        await flux.client.create(helmrepo("oci", namespace, f"oci://{reg.address}/charts",
                                          type="oci", insecure=True))
        await flux.client.create(helmchart("podinfo", namespace, "podinfo", "oci",
                                           version="6.x"))
        refused = await flux.wait(API, KIND, "podinfo", namespace,
                                  failed("FetchFailed", "ChartPullError"))
        assert "could not get tags for \"podinfo\"" in \
            condition(refused, "FetchFailed")["message"]

        await secret(flux, namespace, "pusher", {"username": user.encode(),
                                                 "password": password.encode()})
        await flux.client.merge_patch(API, "HelmRepository", "oci", {"spec": {
            "secretRef": {"name": "pusher"}}}, namespace)
        await request(flux, KIND, "podinfo", namespace, "with-credentials")
        obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
        assert obj["status"]["artifact"]["revision"] == "6.0.0"
        assert password not in str(obj)
    finally:
        reg.stop()


# --------------------------------------------------------------------------- Git


APP_TEMPLATE = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
                "data:\n  greeting: {{ .Values.greeting | quote }}\n")


def app_chart(dependency_url: str, *, version: str = "0.1.0",
              dependency_version: str = "1.x") -> dict[str, str]:
    """A chart directory ``charts/app`` depending on ``redis`` from a Helm repository and
    on ``charts/common`` in the same source, plus an extra values file."""
    return {
        "charts/app/Chart.yaml": yaml.safe_dump({
            "apiVersion": "v2", "name": "app", "version": version,
            "dependencies": [
                {"name": "redis", "version": dependency_version,
                 "repository": dependency_url},
                {"name": "common", "version": "0.1.0", "repository": "file://../common"},
            ]}),
        "charts/app/values.yaml": "greeting: hello\nreplicas: 1\nnested:\n  a: 1\n  b: 2\n",
        "charts/app/values-prod.yaml": "replicas: 3\nnested:\n  b: 20\n",
        "charts/app/templates/configmap.yaml": APP_TEMPLATE,
        "charts/common/Chart.yaml": "apiVersion: v2\nname: common\nversion: 0.1.0\n"
                                    "type: library\n",
        "charts/common/templates/_helpers.tpl": '{{- define "common.name" -}}x{{- end -}}\n',
        "charts/common/.helmignore": "*.md\n",
        "charts/common/README.md": "ignored by the dependency's own .helmignore\n",
    }


async def git_source(flux: Flux, git_server: GitServer, namespace: str,
                     files: dict[str, str]) -> Any:
    repo = git_server.make_repo("charts", files)
    await flux.client.create(gitrepo("charts", namespace, git_server.repo_url("charts")))
    return repo


async def test_a_chart_directory_from_git_is_packaged_with_its_dependencies(
        flux: Flux, helm: HelmCLI, git_server: GitServer, tmp_path: Path,
        namespace: str) -> None:
    auth = BasicAuth("helm-user", "s3cret")
    with HelmRepoServer(tmp_path / "deps", auth=auth) as deps:
        publish(helm, deps, ("redis", "1.0.0"), ("redis", "1.2.0"), ("redis", "2.0.0"))
        # the dependency's repository is a HelmRepository here: its credentials and
        # its stored index are used
        await secret(flux, namespace, "creds", {"username": b"helm-user",
                                                "password": b"s3cret"})
        await flux.client.create(helmrepo("deps", namespace, deps.url + "/",
                                          secretRef={"name": "creds"}))
        await flux.wait(API, "HelmRepository", "deps", namespace, ready)
        index_fetches = deps.requests("/index.yaml")
        repo = await git_source(flux, git_server, namespace, app_chart(deps.url))
        await flux.client.create(helmchart("app", namespace, "./charts/app", "charts",
                                           kind="GitRepository"))
        obj = await flux.wait(API, KIND, "app", namespace, ready)
        assert deps.requests("/redis-1.2.0.tgz") == 1
        assert deps.requests("/index.yaml") == index_fetches  # the stored index served
    artifact = obj["status"]["artifact"]
    assert artifact["revision"] == "0.1.0"
    assert artifact["path"] == f"helmchart/{namespace}/app/app-0.1.0.tgz"
    assert obj["status"]["observedSourceArtifactRevision"] == \
        f"main@sha1:{head(repo, 'main')}"
    files = chart_files(flux, obj)
    assert chart_yaml(files, "app/charts/redis/Chart.yaml")["version"] == "1.2.0"
    assert chart_yaml(files, "app/charts/common/Chart.yaml")["type"] == "library"
    assert "app/charts/common/README.md" not in files
    assert files["app/values.yaml"] == app_chart("")["charts/app/values.yaml"].encode()
    assert "app/values-prod.yaml" in files
    summary = "packaged 'app' chart with version '0.1.0'"
    assert (condition(obj, "Ready")["reason"], condition(obj, "Ready")["message"]) == (
        "ChartPackageSucceeded", summary)
    assert await events(flux, namespace, "ChartPackageSucceeded", "app") == [summary]
    assert await events(flux, namespace, "ResolvedDependencies", "app") == [
        "resolved 2 chart dependencies"]


async def test_a_dependency_without_a_helm_repository_is_fetched_from_its_url(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, git_server: GitServer,
        namespace: str) -> None:
    publish(helm, server, ("redis", "1.0.0"))
    await git_source(flux, git_server, namespace, app_chart(server.url))
    await flux.client.create(helmchart("app", namespace, "charts/app", "charts",
                                       kind="GitRepository"))
    obj = await flux.wait(API, KIND, "app", namespace, ready)
    assert server.requests("/index.yaml") == 1  # as Flux's code does, anonymously
    assert "app/charts/redis/Chart.yaml" in chart_files(flux, obj)


async def test_a_dependency_that_cannot_be_resolved_is_a_build_failure(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, git_server: GitServer,
        namespace: str) -> None:
    publish(helm, server, ("redis", "1.0.0"))
    await git_source(flux, git_server, namespace,
                     app_chart(server.url, dependency_version="9.x"))
    await flux.client.create(helmchart("app", namespace, "charts/app", "charts",
                                       kind="GitRepository"))
    obj = await flux.wait(API, KIND, "app", namespace, failed("BuildFailed"))
    assert condition(obj, "BuildFailed")["reason"] == "DependencyBuildError"
    assert condition(obj, "BuildFailed")["message"] == (
        "dependency build error: failed to add remote dependency 'redis': failed to get "
        f"chart 'redis' version '9.x' from '{server.url}': no 'redis' chart with version "
        "matching '9.x' found")
    assert not condition(obj, "FetchFailed") and not condition(obj, "Stalled")
    assert condition(obj, "Reconciling")["message"] == \
        "building artifact: new 'app' chart with version '0.1.0'"


async def test_values_files_from_git_are_merged_and_revision_strategy_versions_by_commit(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, git_server: GitServer,
        namespace: str) -> None:
    publish(helm, server, ("redis", "1.0.0"))
    repo = await git_source(flux, git_server, namespace, app_chart(server.url))
    await flux.client.create(helmchart(
        "app", namespace, "charts/app", "charts", kind="GitRepository",
        reconcileStrategy="Revision",
        valuesFiles=["charts/app/values.yaml", "charts/app/values-prod.yaml"]))
    sha = head(repo, "main")
    obj = await flux.wait(API, KIND, "app", namespace, ready)
    assert obj["status"]["artifact"]["revision"] == f"0.1.0+{sha[:12]}.1"
    files = chart_files(flux, obj)
    assert yaml.safe_load(files["app/values.yaml"]) == {
        "greeting": "hello", "replicas": 3, "nested": {"a": 1, "b": 20}}
    assert chart_yaml(files, "app/Chart.yaml")["version"] == f"0.1.0+{sha[:12]}.1"
    assert condition(obj, "Ready")["message"] == (
        f"packaged 'app' chart with version '0.1.0+{sha[:12]}.1' and merged values files "
        "[charts/app/values.yaml charts/app/values-prod.yaml]")

    # any new commit is a new chart version, and its artifact reaches the chart over the
    # bus: nobody asks the HelmChart to reconcile
    newer = commit(repo, {"README.md": "a commit that leaves the chart alone\n"})
    await request(flux, "GitRepository", "charts", namespace, "new-commit")
    await flux.wait(API, KIND, "app", namespace, version_is(f"0.1.0+{newer[:12]}.1"),
                    within=10)


async def test_a_missing_values_file_stalls_unless_missing_ones_are_ignored(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, git_server: GitServer,
        namespace: str) -> None:
    publish(helm, server, ("redis", "1.0.0"))
    await git_source(flux, git_server, namespace, app_chart(server.url))
    await flux.client.create(helmchart(
        "app", namespace, "charts/app", "charts", kind="GitRepository",
        valuesFiles=["charts/app/values-prod.yaml", "charts/app/missing.yaml"]))
    stalled = await flux.wait(API, KIND, "app", namespace, failed("Stalled"))
    message = ("values files merge error: no values file found at path "
               "'/charts/app/missing.yaml' (reference 'charts/app/missing.yaml')")
    for type_ in ("BuildFailed", "Stalled", "Ready"):
        assert (condition(stalled, type_)["reason"], condition(stalled, type_)["message"]) \
            == ("ValuesFilesError", message), type_

    await flux.client.merge_patch(API, KIND, "app", {"spec": {
        "ignoreMissingValuesFiles": True}}, namespace)
    obj = await flux.wait(API, KIND, "app", namespace, version_is("0.1.0+2"))
    assert obj["status"]["observedValuesFiles"] == ["charts/app/values-prod.yaml"]
    assert not condition(obj, "BuildFailed") and not condition(obj, "Stalled")
    assert yaml.safe_load(chart_files(flux, obj)["app/values.yaml"]) == {
        "replicas": 3, "nested": {"b": 20}}  # values.yaml is not implied
    assert condition(obj, "Ready")["message"] == (
        "packaged 'app' chart with version '0.1.0+2' and merged values files "
        "[charts/app/values-prod.yaml]")


async def test_chart_version_strategy_rebuilds_when_the_chart_version_changes(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, git_server: GitServer,
        namespace: str) -> None:
    publish(helm, server, ("redis", "1.0.0"))
    repo = await git_source(flux, git_server, namespace, app_chart(server.url))
    await flux.client.create(helmchart("app", namespace, "charts/app", "charts",
                                       kind="GitRepository"))
    first = await flux.wait(API, KIND, "app", namespace, ready)
    stored = flux.storage / first["status"]["artifact"]["path"]
    inode = stored.stat().st_ino

    # a commit that leaves the chart version: the source moves on, the artifact stays
    touched = commit(repo, {"charts/app/templates/extra.yaml": APP_TEMPLATE})
    await request(flux, "GitRepository", "charts", namespace, "same-version")
    same = await flux.wait(API, KIND, "app", namespace, lambda o: o["status"].get(
        "observedSourceArtifactRevision") == f"main@sha1:{touched}" and ready(o), within=10)
    assert same["status"]["artifact"] == first["status"]["artifact"]
    assert stored.stat().st_ino == inode

    # a new chart version is a new artifact, straight from the source's bus event
    bumped = commit(repo, {"charts/app/Chart.yaml": app_chart(server.url, version="0.2.0")[
        "charts/app/Chart.yaml"]})
    await request(flux, "GitRepository", "charts", namespace, "new-version")
    second = await flux.wait(API, KIND, "app", namespace, version_is("0.2.0"), within=10)
    assert second["status"]["observedSourceArtifactRevision"] == f"main@sha1:{bumped}"
    assert "app/templates/extra.yaml" in chart_files(flux, second)


async def test_a_chart_waits_for_a_missing_source_and_builds_when_it_arrives(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "later"))
    waiting = await flux.wait(API, KIND, "podinfo", namespace,
                              failed("FetchFailed", "SourceUnavailable"))
    assert condition(waiting, "FetchFailed")["message"] == (
        "failed to get source: helmrepositories.source.toolkit.fluxcd.io \"later\" not "
        "found")
    assert condition(waiting, "Ready")["status"] == "False"
    assert not condition(waiting, "Stalled")
    assert await events(flux, namespace, "SourceUnavailable", "podinfo")

    # the source's first artifact enqueues the chart at once (the retry is 30 s away)
    await flux.client.create(helmrepo("later", namespace, server.url))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready, within=10)
    assert obj["status"]["artifact"]["revision"] == "6.0.0"


async def test_a_path_without_a_chart_stalls(flux: Flux, git_server: GitServer,
                                             namespace: str) -> None:
    await git_source(flux, git_server, namespace, {"README.md": "no charts here\n"})
    await flux.client.create(helmchart("nothing", namespace, "./charts/nothing", "charts",
                                       kind="GitRepository"))
    stalled = await flux.wait(API, KIND, "nothing", namespace, failed("Stalled"))
    assert (condition(stalled, "FetchFailed")["reason"],
            condition(stalled, "FetchFailed")["message"]) == (
        "InvalidChartReference",
        "invalid chart reference: stat charts/nothing: no such file or directory")


async def test_verify_is_refused_for_sources_other_than_helm_repositories(
        flux: Flux, git_server: GitServer, namespace: str) -> None:
    """The CRD's CEL rule refuses it at the API server (the controller's own check, which
    stalls such a chart, is for servers that do not evaluate the rule)."""
    await git_source(flux, git_server, namespace, {"README.md": "x\n"})
    with pytest.raises(Invalid) as refused:
        await flux.client.create(helmchart("signed", namespace, "charts/app", "charts",
                                           kind="GitRepository",
                                           verify={"provider": "cosign"}))
    assert "spec.verify is only supported when spec.sourceRef.kind is 'HelmRepository'" in \
        str(refused.value)


async def test_deleting_a_chart_removes_its_artifacts_and_finalizer(
        flux: Flux, helm: HelmCLI, server: HelmRepoServer, namespace: str) -> None:
    publish(helm, server, ("podinfo", "6.0.0"))
    await flux.client.create(helmrepo("charts", namespace, server.url))
    await flux.client.create(helmchart("podinfo", namespace, "podinfo", "charts"))
    obj = await flux.wait(API, KIND, "podinfo", namespace, ready)
    assert "finalizers.fluxcd.io" in obj["metadata"]["finalizers"]
    directory = (flux.storage / obj["status"]["artifact"]["path"]).parent
    assert directory.is_dir()
    await flux.client.delete(API, KIND, "podinfo", namespace)
    async with asyncio.timeout(20):
        while True:
            try:
                await flux.get(API, KIND, "podinfo", namespace)
            except NotFound:
                break
            await asyncio.sleep(0.1)
    assert not directory.exists()
