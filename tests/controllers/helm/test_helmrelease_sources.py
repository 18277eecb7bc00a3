"""HelmRelease end to end, by chart source and release target: charts from an
OCIRepository (a real registry, filled with ``helm push``), from a HelmChart the user
made, from a git repository and from a Bucket; the template replaced by ``chartRef``; a
chart renamed; target, storage and created namespaces, long release names; an
impersonated service account; and the artifact bus enqueuing exactly the releases of a
new chart. Real manager, real helm, the cluster fixture."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.api.helm import API_VERSION as HELM_API
from fluxd.api.source import API_VERSION as SOURCE_API
from fluxd.kube import NotFound
from tests.conftest import Cluster
from tests.controllers.conftest import Flux, condition
from tests.controllers.helm.test_helmrelease import (
    events,
    helm,
    helm_cli,
    helmrelease,
    helmrepository,
    publish,
    ready,
    ready_with,
    reconcile,
    repo,
)
from tests.oci.conftest import start_registry
from tests.support.charts import package_chart, write_release_chart
from tests.support.gitserver import GitServer
from tests.support.helmrepo import HelmCLI, HelmRepoServer
from tests.support.registry import Registry

pytestmark = pytest.mark.anyio

__all__ = ["helm_cli", "repo"]  # the fixtures, shared with test_helmrelease

HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def more_namespaces(cluster: Cluster, namespace: str) -> Iterator[Callable[[str], str]]:
    """Names of further namespaces (``<namespace>-<suffix>``), deleted at the end
    whoever made them."""
    made: list[str] = []

    def name(suffix: str) -> str:
        made.append(f"{namespace}-{suffix}")
        return made[-1]

    yield name
    for ns in made:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found",
                        check=False)


# --------------------------------------------------------------------------- helpers


def chart_ref(name: str, namespace: str, kind: str, ref: str, **spec: Any) -> dict[str, Any]:
    """A HelmRelease taking its chart from ``chartRef``."""
    obj = helmrelease(name, namespace, **spec)
    del obj["spec"]["chart"]
    obj["spec"]["chartRef"] = {"kind": kind, "name": ref}
    return obj


def template(name: str, namespace: str, chart: str, kind: str, source: str,
             **spec: Any) -> dict[str, Any]:
    """A HelmRelease whose chart template points at ``kind/source``."""
    obj = helmrelease(name, namespace, chart=chart, **spec)
    obj["spec"]["chart"]["spec"]["sourceRef"] = {"kind": kind, "name": source}
    return obj


def push(helm_cli: HelmCLI, registry: Registry, work: Path, version: str, *,
         app_version: str) -> str:
    """The release chart pushed to ``oci://<registry>/charts/greeter:<version>``; the
    manifest digest helm reports."""
    chart = write_release_chart(work / app_version, "greeter", version,
                                app_version=app_version)
    archive = package_chart(helm_cli, chart, work / f"pkg-{app_version}")
    done = helm_cli.run("push", archive, f"oci://{registry.address}/charts", "--plain-http")
    found = re.search(r"Digest: (sha256:[0-9a-f]{64})", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(1)


def ocirepository(name: str, namespace: str, url: str, tag: str) -> dict[str, Any]:
    return {"apiVersion": SOURCE_API, "kind": "OCIRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "insecure": True, "ref": {"tag": tag},
                     "layerSelector": {"mediaType": HELM_LAYER, "operation": "copy"}}}


def helmchart(name: str, namespace: str, chart: str, source: str) -> dict[str, Any]:
    return {"apiVersion": SOURCE_API, "kind": "HelmChart",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "chart": chart, "version": "*",
                     "sourceRef": {"kind": "HelmRepository", "name": source}}}


async def event_annotations(flux: Flux, namespace: str, reason: str) -> list[dict[str, str]]:
    listed = await flux.client.list_all("v1", "Event", namespace)
    return [dict(e["metadata"].get("annotations") or {}) for e in listed.items
            if e["reason"] == reason]


def helm_secrets(cluster: Cluster, namespace: str, release: str) -> list[str]:
    """The names of Helm's storage Secrets of ``release`` in ``namespace``."""
    listed = cluster.kubectl_json("get", "secrets", "-n", namespace, "-l",
                                  f"owner=helm,name={release}")
    return sorted(s["metadata"]["name"] for s in listed["items"])


def flux_short_name(name: str) -> str:
    """Flux's ``ShortenName``, written out here from its documented rule."""
    if len(name) <= 53:
        return name
    return name[:40] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- tests


async def test_a_chart_from_an_oci_repository_carries_its_digest_and_a_new_push_upgrades(
        flux: Flux, helm_cli: HelmCLI, registry: Registry, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    first = push(helm_cli, registry, tmp_path / "oci", "0.1.0", app_version="1.0.0")
    await flux.client.apply(ocirepository("greeter", namespace,
                                          f"oci://{registry.address}/charts/greeter",
                                          "0.1.0"))
    await flux.client.apply(chart_ref("web", namespace, "OCIRepository", "greeter"))
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("InstallSucceeded", 1), within=90)
    version = f"0.1.0+{first.removeprefix('sha256:')[:12]}"
    status = hr["status"]
    assert (status["lastAttemptedRevision"], status["lastAttemptedRevisionDigest"]) == (
        version, first)
    assert "helmChart" not in status
    snap = status["history"][0]
    assert (snap["chartName"], snap["chartVersion"], snap["appVersion"],
            snap["ociDigest"]) == ("greeter", version, "1.0.0", first)
    assert condition(hr, "Ready")["message"] == (
        f"Helm install succeeded for release {namespace}/web.v1 with chart "
        f"greeter@{version}")
    listed = helm(cluster, tmp_path, "list", "-n", namespace)
    assert [(r["name"], r["chart"], r["app_version"]) for r in listed] == [
        ("web", f"greeter-{version}", "1.0.0")]
    annotations = await event_annotations(flux, namespace, "InstallSucceeded")
    assert [(a.get("helm.toolkit.fluxcd.io/revision"),
             a.get("helm.toolkit.fluxcd.io/app-version"),
             a.get("helm.toolkit.fluxcd.io/oci-digest")) for a in annotations] == [
        (version, "1.0.0", first)]

    # the same tag pushed with other content: a new digest, so an upgrade
    second = push(helm_cli, registry, tmp_path / "oci", "0.1.0", app_version="2.0.0")
    assert second != first
    await reconcile(flux, "OCIRepository", SOURCE_API, "greeter", namespace, "pushed")
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("UpgradeSucceeded", 2), within=90)
    version2 = f"0.1.0+{second.removeprefix('sha256:')[:12]}"
    assert (hr["status"]["lastAttemptedRevision"],
            hr["status"]["lastAttemptedRevisionDigest"]) == (version2, second)
    assert [(s["version"], s["chartVersion"], s["ociDigest"])
            for s in hr["status"]["history"]] == [(2, version2, second), (1, version, first)]
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"], h["app_version"]) for h in history] == [
        (1, "superseded", "1.0.0"), (2, "deployed", "2.0.0")]


async def test_switching_to_a_chart_ref_deletes_the_templated_helm_chart(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("web", namespace))
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("InstallSucceeded", 1), within=90)
    assert hr["status"]["helmChart"] == f"{namespace}/{namespace}-web"

    # the user's own HelmChart, then the release pointed at it
    await flux.client.apply(helmchart("greeter", namespace, "greeter", "charts"))
    # a patch, as a user switches: server-side apply would leave the template's
    # defaulted fields behind
    await flux.client.merge_patch(HELM_API, "HelmRelease", "web", {"spec": {
        "chart": None, "chartRef": {"kind": "HelmChart", "name": "greeter"}}}, namespace)
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         lambda o: ready(o) and "helmChart" not in o["status"], within=60)
    with pytest.raises(NotFound):
        await flux.get(SOURCE_API, "HelmChart", f"{namespace}-web", namespace)
    assert await events(flux, namespace, "HelmChartDeleted") == [
        f"deleted HelmChart '{namespace}/{namespace}-web'"]
    # the same chart and values: the release is in sync, nothing is released again
    assert [(s["version"], s["chartVersion"]) for s in hr["status"]["history"]] == [
        (1, "0.1.0")]
    assert hr["status"]["lastAttemptedRevision"] == "0.1.0"
    assert "lastAttemptedRevisionDigest" not in hr["status"]

    # a new version through the user's HelmChart upgrades the release
    publish(helm_cli, repo, "0.2.0")
    await reconcile(flux, "HelmRepository", SOURCE_API, "charts", namespace, "new")
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("UpgradeSucceeded", 2), within=90)
    assert hr["status"]["lastAttemptedRevision"] == "0.2.0"
    assert "helmChart" not in hr["status"]
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [h["chart"] for h in history] == ["greeter-0.1.0", "greeter-0.2.0"]


async def test_a_new_chart_name_reinstalls_unless_the_strategy_is_in_place(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    publish(helm_cli, repo, "0.1.0")
    publish(helm_cli, repo, "0.3.0", name="welcomer")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    in_place: dict[str, Any] = {"upgrade": {"chartNameChangeStrategy": "InPlaceUpdate"}}
    await flux.client.apply(helmrelease("web", namespace))
    await flux.client.apply(helmrelease("inplace", namespace, **in_place))
    for name in ("web", "inplace"):
        await flux.wait(HELM_API, "HelmRelease", name, namespace,
                        ready_with("InstallSucceeded", 1), within=90)

    await flux.client.apply(helmrelease("web", namespace, chart="welcomer"))
    await flux.client.apply(helmrelease("inplace", namespace, chart="welcomer", **in_place))
    web = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                          lambda o: ready_with("InstallSucceeded", 1)(o)
                          and o["status"]["history"][0]["chartName"] == "welcomer",
                          within=90)
    assert [(s["version"], s["chartName"], s["chartVersion"])
            for s in web["status"]["history"]] == [(1, "welcomer", "0.3.0")]
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"], h["chart"]) for h in history] == [
        (1, "deployed", "welcomer-0.3.0")]
    assert any(m.startswith(f"Helm uninstall succeeded for release {namespace}/web.v1 "
                            "with chart greeter@0.1.0")
               for m in await events(flux, namespace, "UninstallSucceeded"))

    inplace = await flux.wait(HELM_API, "HelmRelease", "inplace", namespace,
                              ready_with("UpgradeSucceeded", 2), within=90)
    assert [(s["version"], s["chartName"]) for s in inplace["status"]["history"]] == [
        (2, "welcomer"), (1, "greeter")]
    history = helm(cluster, tmp_path, "history", "inplace", "-n", namespace)
    assert [(h["revision"], h["chart"]) for h in history] == [
        (1, "greeter-0.1.0"), (2, "welcomer-0.3.0")]


async def test_target_and_storage_namespaces_and_long_release_names(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, more_namespaces: Callable[[str], str]) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    target = more_namespaces("target")
    # 12 + 1 + 40 characters: with the HelmRelease's name, over Helm's 53
    far = more_namespaces("x" * 40)
    storage = more_namespaces("storage")
    await flux.client.apply({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": storage}})
    create: dict[str, Any] = {"install": {"createNamespace": True}}
    await flux.client.apply(helmrelease("web", namespace, targetNamespace=target, **create))
    await flux.client.apply(helmrelease("a-rather-long-release", namespace,
                                        targetNamespace=far, **create))
    await flux.client.apply(helmrelease("stored", namespace, storageNamespace=storage))

    # targetNamespace: the objects there, Helm's storage with the HelmRelease
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("InstallSucceeded", 1), within=90)
    release = f"{target}-web"
    assert (hr["status"]["history"][0]["name"], hr["status"]["history"][0]["namespace"],
            hr["status"]["storageNamespace"]) == (release, target, namespace)
    assert condition(hr, "Ready")["message"].startswith(
        f"Helm install succeeded for release {target}/{release}.v1 ")
    assert cluster.kubectl_json("get", "namespace", target)["status"]["phase"] == "Active"
    assert cluster.kubectl_json("get", "configmap", release, "-n", target)["data"] == {
        "greeting": "hello"}
    listed = helm(cluster, tmp_path, "list", "-n", namespace)
    assert [(r["namespace"], r["status"]) for r in listed if r["name"] == release] == [
        (target, "deployed")]
    assert helm_secrets(cluster, namespace, release) == [f"sh.helm.release.v1.{release}.v1"]
    assert helm_secrets(cluster, target, release) == []

    # a composed name over 53 characters: shortened as Flux does
    hr = await flux.wait(HELM_API, "HelmRelease", "a-rather-long-release", namespace,
                         ready_with("InstallSucceeded", 1), within=90)
    # the rule checked on a name from Flux's own tests (internal/release/name_test.go)
    assert flux_short_name("release-name-with-very-long-name-which-is-longer-than-53-"
                           "characters") == "release-name-with-very-long-name-which-i-788ca0d0d7b0"
    long_name = f"{far}-a-rather-long-release"
    short = flux_short_name(long_name)
    assert len(long_name) > 53 and len(short) == 53
    assert (hr["status"]["history"][0]["name"], hr["status"]["history"][0]["namespace"]) \
        == (short, far)
    assert cluster.kubectl_json("get", "configmap", short, "-n", far)["metadata"]["name"] \
        == short

    # storageNamespace: Helm's Secrets there, the objects with the HelmRelease
    hr = await flux.wait(HELM_API, "HelmRelease", "stored", namespace,
                         ready_with("InstallSucceeded", 1), within=90)
    assert (hr["status"]["history"][0]["namespace"], hr["status"]["storageNamespace"]) == (
        namespace, storage)
    assert [(r["name"], r["namespace"]) for r in helm(cluster, tmp_path, "list", "-n",
                                                      storage)] == [("stored", namespace)]
    assert helm_secrets(cluster, storage, "stored") == ["sh.helm.release.v1.stored.v1"]
    assert helm_secrets(cluster, namespace, "stored") == []
    assert cluster.kubectl_json("get", "configmap", "stored", "-n", namespace)["data"] == {
        "greeting": "hello"}


async def test_an_impersonated_account_needs_rights_and_a_reset_retries_the_install(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": "deployer", "namespace": namespace}})
    await flux.client.apply(helmrelease("web", namespace, serviceAccountName="deployer"))
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         lambda o: condition(o, "Released").get("reason") == "InstallFailed",
                         within=90)
    message = condition(hr, "Released")["message"]
    assert message.startswith(f"Helm install failed for release {namespace}/web with chart "
                              "greeter@0.1.0: ")
    assert "forbidden" in message
    assert f"system:serviceaccount:{namespace}:deployer" in message
    assert condition(hr, "Ready")["status"] == "False"

    await flux.client.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployer-admin", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                      "namespace": namespace}]})
    # the install's retries are spent: a reset request (flux reconcile hr --reset)
    await flux.client.merge_patch(HELM_API, "HelmRelease", "web", {"metadata": {
        "annotations": {"reconcile.fluxcd.io/requestedAt": "granted",
                        "reconcile.fluxcd.io/resetAt": "granted"}}}, namespace)
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("InstallSucceeded"), within=90)
    assert hr["status"]["lastHandledResetAt"] == "granted"


async def test_charts_from_git_are_released_and_a_bucket_source_is_reported(
        flux: Flux, namespace: str, tmp_path: Path, cluster: Cluster) -> None:
    chart = write_release_chart(tmp_path / "src", "greeter", "0.4.0")
    files = {f"charts/greeter/{p.relative_to(chart)}": p.read_bytes()
             for p in chart.rglob("*") if p.is_file()}
    with GitServer(tmp_path / "repos") as git:
        git.make_repo("charts", files)
        await flux.client.apply({"apiVersion": SOURCE_API, "kind": "GitRepository",
                                 "metadata": {"name": "charts", "namespace": namespace},
                                 "spec": {"interval": "10m", "url": git.repo_url("charts"),
                                          "ref": {"branch": "main"}}})
        await flux.client.apply(template("web", namespace, "./charts/greeter",
                                         "GitRepository", "charts"))
        await flux.client.apply(template("bucket", namespace, "./charts/greeter", "Bucket",
                                         "charts"))
        hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                             ready_with("InstallSucceeded", 1), within=90)
    assert (hr["status"]["lastAttemptedRevision"],
            hr["status"]["history"][0]["chartVersion"]) == ("0.4.0", "0.4.0")
    chart_obj = await flux.get(SOURCE_API, "HelmChart", f"{namespace}-web", namespace)
    assert chart_obj["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "charts"}
    assert cluster.kubectl_json("get", "configmap", "web", "-n", namespace)["data"] == {
        "greeting": "hello"}

    # fluxd has no Bucket source: its HelmChart stalls, the HelmRelease says why
    stalled = await flux.wait(SOURCE_API, "HelmChart", f"{namespace}-bucket", namespace,
                              lambda o: condition(o, "Stalled").get("status") == "True")
    why = condition(stalled, "Stalled")["message"]
    assert "Bucket sources are not supported" in why
    await reconcile(flux, "HelmRelease", HELM_API, "bucket", namespace, "after-stall")
    hr = await flux.wait(HELM_API, "HelmRelease", "bucket", namespace,
                         lambda o: o["status"].get("lastHandledReconcileAt") == "after-stall"
                         and condition(o, "Ready").get("status") == "False")
    assert (condition(hr, "Ready")["reason"], condition(hr, "Ready")["message"]) == (
        "SourceNotReady", f"HelmChart '{namespace}/{namespace}-bucket' is not ready: {why}")
    assert "history" not in hr["status"]


async def test_a_new_chart_version_enqueues_exactly_the_releases_of_that_chart(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str) -> None:
    publish(helm_cli, repo, "0.1.0")
    publish(helm_cli, repo, "0.1.0", name="welcomer")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("web", namespace, interval="1h"))
    await flux.client.apply(helmrelease("other", namespace, chart="welcomer", interval="1h"))
    await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                    ready_with("InstallSucceeded", 1), within=90)
    other = await flux.wait(HELM_API, "HelmRelease", "other", namespace,
                            ready_with("InstallSucceeded", 1), within=90)
    runs = dict(flux.reconciler("HelmRelease").helm.runs)

    publish(helm_cli, repo, "0.2.0")
    await reconcile(flux, "HelmRepository", SOURCE_API, "charts", namespace, "new")
    # no clock jump: the hour-long interval does not pass, the new artifact enqueues
    await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                    ready_with("UpgradeSucceeded", 2), within=60)
    # the other chart's HelmChart saw the new index too: nothing new for it
    index = (await flux.get(SOURCE_API, "HelmRepository", "charts", namespace))["status"]
    await flux.wait(SOURCE_API, "HelmChart", f"{namespace}-other", namespace,
                    lambda o: (o.get("status") or {}).get("observedSourceArtifactRevision")
                    == index["artifact"]["revision"])
    await asyncio.sleep(1)  # what it would have enqueued has run by now
    after = await flux.get(HELM_API, "HelmRelease", "other", namespace)
    assert after["metadata"]["resourceVersion"] == other["metadata"]["resourceVersion"]
    assert after["status"].get("lastHandledReconcileAt") is None
    assert after["status"]["history"][0]["version"] == 1
    now = flux.reconciler("HelmRelease").helm.runs
    # web's upgrade alone (and the ``helm get metadata`` it starts with)
    assert {k: now[k] - runs.get(k, 0) for k in now if now[k] != runs.get(k, 0)} in (
        {"upgrade": 1}, {"upgrade": 1, "metadata": 1})
