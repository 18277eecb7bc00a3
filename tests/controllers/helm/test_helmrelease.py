"""HelmRelease end to end: the real manager on the cluster fixture, charts made with the
real helm and served from a static Helm repository on loopback, releases made by the real
helm binary — and checked with it (``helm list``/``helm history``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.api.helm import API_VERSION as HELM_API
from fluxd.api.source import API_VERSION as SOURCE_API
from fluxd.kube import NotFound
from tests.conftest import Cluster, tool
from tests.controllers.conftest import Flux, condition
from tests.support.charts import package_chart, write_release_chart
from tests.support.helmrepo import HelmCLI, HelmRepoServer

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def helm_cli(tmp_path: Path) -> HelmCLI:
    return HelmCLI(tool("helm"), tmp_path / "helm-home")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[HelmRepoServer]:
    with HelmRepoServer(tmp_path / "charts") as srv:
        yield srv


def publish(helm_cli: HelmCLI, repo: HelmRepoServer, version: str, *, hook: bool = False,
            name: str = "greeter", crd: bool = False) -> None:
    chart = write_release_chart(repo.root.parent / f"src-{version}", name, version,
                                hook=hook, crd_file=crd)
    package_chart(helm_cli, chart, repo.root)
    helm_cli.index(repo.root, repo.url)


def helmrepository(name: str, namespace: str, url: str) -> dict[str, Any]:
    return {"apiVersion": SOURCE_API, "kind": "HelmRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url}}


def helmrelease(name: str, namespace: str, *, chart: str = "greeter", version: str = "*",
                **spec: Any) -> dict[str, Any]:
    return {"apiVersion": HELM_API, "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m",
                     "chart": {"spec": {"chart": chart, "version": version,
                                        "sourceRef": {"kind": "HelmRepository",
                                                      "name": "charts"}}},
                     **spec}}


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True" and \
        obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def ready_with(reason: str, version: int | None = None) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        history = (obj.get("status") or {}).get("history") or []
        return ready(obj) and condition(obj, "Ready").get("reason") == reason and (
            version is None or (bool(history) and history[0]["version"] == version))
    return check


def helm(cluster: Cluster, tmp_path: Path, *args: str) -> Any:
    env = cluster.env({"HELM_CACHE_HOME": str(tmp_path / "hc"),
                       "HELM_CONFIG_HOME": str(tmp_path / "hcfg"),
                       "HELM_DATA_HOME": str(tmp_path / "hd")})
    done = subprocess.run([tool("helm"), *args, "-o", "json"], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    return json.loads(done.stdout)


async def reconcile(flux: Flux, kind: str, api: str, name: str, namespace: str,
                    token: str) -> None:
    await flux.client.merge_patch(api, kind, name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": token}}}, namespace)


async def events(flux: Flux, namespace: str, reason: str) -> list[str]:
    listed = await flux.client.list_all("v1", "Event", namespace)
    return [e["message"] for e in listed.items if e["reason"] == reason]


# --------------------------------------------------------------------------- tests


async def test_a_chart_is_installed_then_upgraded_on_a_new_version_and_helm_agrees(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("web", namespace, values={"greeting": "hi"}))

    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("InstallSucceeded", 1), within=90)
    status = hr["status"]
    assert condition(hr, "Ready")["message"] == \
        f"Helm install succeeded for release {namespace}/web.v1 with chart greeter@0.1.0"
    assert condition(hr, "Released")["reason"] == "InstallSucceeded"
    assert status["helmChart"] == f"{namespace}/{namespace}-web"
    assert status["storageNamespace"] == namespace
    assert status["lastAttemptedRevision"] == "0.1.0"
    assert status["lastAttemptedReleaseAction"] == "install"
    assert status["lastAttemptedConfigDigest"].startswith("sha256:")
    snap = status["history"][0]
    assert (snap["name"], snap["namespace"], snap["version"], snap["status"],
            snap["chartName"], snap["chartVersion"]) == ("web", namespace, 1, "deployed",
                                                         "greeter", "0.1.0")
    assert snap["configDigest"] == status["lastAttemptedConfigDigest"]
    ids = {e["id"] for e in status["inventory"]["entries"]}
    assert f"{namespace}_web-app_apps_Deployment" in ids
    assert f"{namespace}_web__ConfigMap" in ids

    chart = await flux.get(SOURCE_API, "HelmChart", f"{namespace}-web", namespace)
    assert chart["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
    cm = cluster.kubectl_json("get", "configmap", "web", "-n", namespace)
    assert cm["data"]["greeting"] == "hi"
    assert cm["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "web"
    assert cm["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"] == namespace
    listed = helm(cluster, tmp_path, "list", "-n", namespace)
    assert [(r["name"], r["revision"], r["status"]) for r in listed] == [
        ("web", "1", "deployed")]

    publish(helm_cli, repo, "0.2.0")
    await reconcile(flux, "HelmRepository", SOURCE_API, "charts", namespace, "new")
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("UpgradeSucceeded", 2), within=90)
    assert hr["status"]["lastAttemptedRevision"] == "0.2.0"
    assert [(s["version"], s["status"]) for s in hr["status"]["history"]] == [
        (2, "deployed"), (1, "superseded")]
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"], h["chart"]) for h in history] == [
        (1, "superseded", "greeter-0.1.0"), (2, "deployed", "greeter-0.2.0")]
    assert any("greeter@0.2.0" in m for m in await events(flux, namespace,
                                                           "UpgradeSucceeded"))


async def test_an_in_sync_release_starts_no_helm_process(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("quiet", namespace))
    hr = await flux.wait(HELM_API, "HelmRelease", "quiet", namespace, ready, within=90)
    runs = sum(flux.reconciler("HelmRelease").helm.runs.values())
    assert runs >= 1
    version = hr["metadata"]["resourceVersion"]
    await reconcile(flux, "HelmRelease", HELM_API, "quiet", namespace, "again")
    hr = await flux.wait(HELM_API, "HelmRelease", "quiet", namespace,
                         lambda o: o["status"].get("lastHandledReconcileAt") == "again")
    assert sum(flux.reconciler("HelmRelease").helm.runs.values()) == runs
    assert ready(hr) and hr["status"]["history"][0]["version"] == 1
    del version


async def test_a_values_change_in_a_watched_config_map_upgrades_the_release(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web-values", "namespace": namespace,
                     "labels": {"reconcile.fluxcd.io/watch": "Enabled"}},
        "data": {"values.yaml": "greeting: from-config-map\n"}})
    await flux.client.apply(helmrelease(
        "web", namespace, values={"greeting": "inline"},
        valuesFrom=[{"kind": "ConfigMap", "name": "web-values"},
                    {"kind": "ConfigMap", "name": "web-values", "valuesKey": "extra",
                     "targetPath": "extra.flag", "optional": True}]))
    await flux.wait(HELM_API, "HelmRelease", "web", namespace, ready, within=90)
    # inline values win over valuesFrom
    assert cluster.kubectl_json("get", "cm", "web", "-n", namespace)["data"]["greeting"] \
        == "inline"

    await flux.client.apply(helmrelease(
        "web", namespace, valuesFrom=[{"kind": "ConfigMap", "name": "web-values"}]))
    await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                    ready_with("UpgradeSucceeded", 2), within=90)
    assert cluster.kubectl_json("get", "cm", "web", "-n", namespace)["data"]["greeting"] \
        == "from-config-map"

    await flux.client.apply({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "web-values", "namespace": namespace,
                     "labels": {"reconcile.fluxcd.io/watch": "Enabled"}},
        "data": {"values.yaml": "greeting: changed\n"}})
    await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                    ready_with("UpgradeSucceeded", 3), within=90)
    assert cluster.kubectl_json("get", "cm", "web", "-n", namespace)["data"]["greeting"] \
        == "changed"


async def test_a_failing_upgrade_is_rolled_back_and_tests_run_after_each_release(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    spec = {"test": {"enable": True}, "timeout": "20s",
            "upgrade": {"remediation": {"retries": 1}}}
    await flux.client.apply(helmrelease("web", namespace, **spec))
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         ready_with("TestSucceeded", 1), within=90)
    assert condition(hr, "TestSuccess")["message"].endswith(
        ": 1 test hook completed successfully")
    assert hr["status"]["history"][0]["testHooks"]["web-smoke"]["phase"] == "Succeeded"

    # a failing Deployment: the upgrade fails, is retried once, then rolled back
    await flux.client.apply(helmrelease("web", namespace, values={"failDeployment": True},
                                        **spec))
    hr = await flux.wait(
        HELM_API, "HelmRelease", "web", namespace,
        lambda o: condition(o, "Remediated").get("reason") == "RollbackSucceeded"
        and condition(o, "Stalled").get("status") == "True", within=150, jump=1)
    assert condition(hr, "Ready")["status"] == "False"
    assert hr["status"]["upgradeFailures"] == 2
    assert condition(hr, "Stalled")["reason"] == "RetriesExceeded"
    # v2 failed, rolled back to v1 (v3); the retry v4 failed, rolled back to v3 (v5)
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"]) for h in history][-2:] == [
        (4, "failed"), (5, "deployed")]
    assert history[-1]["description"] == "Rollback to 3"
    assert [(s["version"], s["status"]) for s in hr["status"]["history"]][:2] == [
        (5, "deployed"), (4, "failed")]

    # a failing test with the default remediation: TestSuccess False, release failed
    await flux.client.apply(helmrelease("web", namespace, values={"failTest": True},
                                        test={"enable": True}, timeout="20s"))
    hr = await flux.wait(
        HELM_API, "HelmRelease", "web", namespace,
        lambda o: condition(o, "TestSuccess").get("reason") == "TestFailed", within=120,
        jump=1)
    assert "Helm test failed for release" in condition(hr, "TestSuccess")["message"]


async def test_deleting_the_helmrelease_uninstalls_the_release_and_its_chart(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("gone", namespace))
    await flux.wait(HELM_API, "HelmRelease", "gone", namespace, ready, within=90)
    await flux.client.delete(HELM_API, "HelmRelease", "gone", namespace)
    async with asyncio.timeout(60):
        while True:
            try:
                await flux.get(HELM_API, "HelmRelease", "gone", namespace)
            except NotFound:
                break
            await asyncio.sleep(0.1)
    assert helm(cluster, tmp_path, "list", "-n", namespace) == []
    assert cluster.kubectl("get", "cm", "gone", "-n", namespace, check=False).returncode != 0
    # the HelmChart's delete was issued; it goes once the source controller lets it
    async with asyncio.timeout(30):
        while True:
            try:
                await flux.get(SOURCE_API, "HelmChart", f"{namespace}-gone", namespace)
            except NotFound:
                break
            await asyncio.sleep(0.1)
    assert any(m.startswith(f"Helm uninstall succeeded for release {namespace}/gone.v1")
               for m in await events(flux, namespace, "UninstallSucceeded"))


async def test_the_chart_s_crds_are_applied_with_the_origin_labels_and_inventoried(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster) -> None:
    publish(helm_cli, repo, "0.1.0", name=namespace, crd=True)
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("crd", namespace, chart=namespace))
    hr = await flux.wait(HELM_API, "HelmRelease", "crd", namespace, ready, within=90)
    crd = f"widgets.{namespace}.fluxd.test"
    found = cluster.kubectl_json("get", "crd", crd)
    assert found["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"] == "crd"
    assert found["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"] == namespace
    ids = {e["id"] for e in hr["status"]["inventory"]["entries"]}
    assert f"_{crd}_apiextensions.k8s.io_CustomResourceDefinition" in ids
    cluster.kubectl("delete", "crd", crd, check=False)
