"""HelmRelease end to end, the harder paths: a release a crash left pending, fluxd's
shutdown in the middle of an install, post-renderers, dependencies, suspend, the
force/reset requests, install remediation, RetryOnFailure, ignored test failures, the
history bound, and no proxy credential in anything fluxd reports.

The real manager on the cluster fixture, charts served by ``HelmRepoServer``, the real
helm binary — and helm's own view (``helm history``) to check what happened. The helpers
and fixtures are ``test_helmrelease``'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.api.helm import API_VERSION as HELM_API
from tests.conftest import Cluster, tool
from tests.controllers.conftest import Flux, condition
from tests.controllers.helm import test_helmrelease as base
from tests.controllers.helm.test_helmrelease import (
    events,
    helm,
    helmrelease,
    helmrepository,
    publish,
    ready,
    ready_with,
)
from tests.support.helmrepo import HelmCLI, HelmRepoServer

pytestmark = pytest.mark.anyio

# test_helmrelease's fixtures
helm_cli = base.helm_cli
repo = base.repo

# --------------------------------------------------------------------------- helpers


async def hr_wait(flux: Flux, name: str, namespace: str, check: Any, *,
                  within: float = 60, jump: float = 0) -> Any:
    return await flux.wait(HELM_API, "HelmRelease", name, namespace, check, within=within,
                           jump=jump)


def reason_of(type_: str, reason: str) -> Any:
    return lambda o: condition(o, type_).get("reason") == reason


def helm_env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    return cluster.env({"HELM_CACHE_HOME": str(tmp_path / "hc"),
                        "HELM_CONFIG_HOME": str(tmp_path / "hcfg"),
                        "HELM_DATA_HOME": str(tmp_path / "hd")})


def release_secrets(cluster: Cluster, namespace: str, name: str,
                    status: str | None = None) -> list[dict[str, Any]]:
    selector = f"owner=helm,name={name}" + (f",status={status}" if status else "")
    listed = cluster.kubectl_json("get", "secrets", "-n", namespace, "-l", selector)
    return list(listed["items"])


async def until(check: Any, within: float = 30) -> None:
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.1)


async def setup_chart(flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer,
                      namespace: str, version: str = "0.1.0") -> None:
    publish(helm_cli, repo, version)
    await flux.client.apply(helmrepository("charts", namespace, repo.url))


# --------------------------------------------------------------------------- tests


async def test_a_release_a_crashed_helm_left_pending_install_is_unlocked_then_upgraded(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    archive = repo.root / "greeter-0.1.0.tgz"
    # helm killed while it waits for the Deployment: its release stays pending-install
    proc = await asyncio.create_subprocess_exec(
        tool("helm"), "install", "web", str(archive), "-n", namespace, "--wait=watcher",
        "--timeout", "5m", "--set", "readyAfter=60s",
        env=helm_env(cluster, tmp_path), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        await until(lambda: bool(release_secrets(cluster, namespace, "web",
                                                 "pending-install")))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    assert [(h["revision"], h["status"]) for h in helm(
        cluster, tmp_path, "history", "web", "-n", namespace)] == [(1, "pending-install")]

    await flux.client.apply(helmrelease("web", namespace))
    hr = await hr_wait(flux, "web", namespace, ready_with("UpgradeSucceeded", 2), within=90)
    unlocked = await events(flux, namespace, "PendingRelease")
    assert unlocked == [f"Unlocked Helm release {namespace}/web.v1 with chart "
                        "greeter@0.1.0 in pending-install state"]
    assert condition(hr, "Released")["reason"] == "UpgradeSucceeded"
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    # helm supersedes the failed release when the upgrade succeeds
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"),
                                                               (2, "deployed")]
    assert history[0]["description"] == "Release unlocked from stale 'pending-install' state"
    assert [(s["version"], s["status"]) for s in hr["status"]["history"]][:1] == [
        (2, "deployed")]


@pytest.mark.parametrize(
    ("flux_overrides", "ready_after", "outcome"),
    [({"shutdown": {"grace_period": "60s"}}, "3s", "deployed"),
     ({"shutdown": {"grace_period": "500ms"}}, "90s", "failed")],
    indirect=["flux_overrides"], ids=["grace-outlasts-install", "grace-ends-first"])
async def test_a_shutdown_during_an_install_never_leaves_the_release_pending(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None, ready_after: str,
        outcome: str) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    await flux.client.apply(helmrelease("slow", namespace, values={"readyAfter": ready_after}))
    await until(lambda: bool(release_secrets(cluster, namespace, "slow", "pending-install")),
                within=60)
    flux.stop.set()
    assert await asyncio.wait_for(flux.runner, 60) == 0
    history = helm(cluster, tmp_path, "history", "slow", "-n", namespace)
    assert [(h["revision"], h["status"]) for h in history] == [(1, outcome)]
    hr = await flux.get(HELM_API, "HelmRelease", "slow", namespace)
    if outcome == "deployed":
        assert ready_with("InstallSucceeded", 1)(hr)
    else:
        assert not release_secrets(cluster, namespace, "slow", "pending-install")
        assert condition(hr, "Ready").get("status") != "True"


async def test_post_renderers_and_common_metadata_reach_the_objects_and_a_change_upgrades(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)

    def renderers(label: str) -> list[dict[str, Any]]:
        return [{"kustomize": {
            "patches": [{"target": {"kind": "Deployment"},
                         "patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"
                                  "  name: any\n  labels:\n"
                                  f"    patched: {label}\n"}],
            "images": [{"name": "busybox", "newName": "mirror.example/busybox",
                        "newTag": "1.37"}]}}]

    spec = {"commonMetadata": {"labels": {"team": "blue"},
                               "annotations": {"fluxd.test/owner": "qa"}}}
    await flux.client.apply(helmrelease("web", namespace, postRenderers=renderers("one"),
                                        **spec))
    hr = await hr_wait(flux, "web", namespace, ready_with("InstallSucceeded", 1), within=90)
    first = hr["status"]["observedPostRenderersDigest"]
    assert first.startswith("sha256:")
    assert hr["status"]["observedCommonMetadataDigest"]
    deploy = cluster.kubectl_json("get", "deployment", "web-app", "-n", namespace)
    labels = deploy["metadata"]["labels"]
    assert labels["patched"] == "one" and labels["team"] == "blue"
    assert labels["helm.toolkit.fluxcd.io/name"] == "web"
    assert labels["helm.toolkit.fluxcd.io/namespace"] == namespace
    assert deploy["metadata"]["annotations"]["fluxd.test/owner"] == "qa"
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "mirror.example/busybox:1.37"
    cm = cluster.kubectl_json("get", "configmap", "web", "-n", namespace)
    assert cm["metadata"]["labels"]["team"] == "blue"
    assert "patched" not in cm["metadata"]["labels"]

    # only the post-renderers change: the chart and values are the same, yet it upgrades
    await flux.client.apply(helmrelease("web", namespace, postRenderers=renderers("two"),
                                        **spec))
    hr = await hr_wait(flux, "web", namespace, ready_with("UpgradeSucceeded", 2), within=90)
    assert hr["status"]["observedPostRenderersDigest"] not in ("", first)
    deploy = cluster.kubectl_json("get", "deployment", "web-app", "-n", namespace)
    assert deploy["metadata"]["labels"]["patched"] == "two"


async def test_a_dependent_waits_for_its_dependency_and_goes_as_soon_as_it_is_ready(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    await flux.client.apply(helmrelease("b", namespace, dependsOn=[{"name": "a"}]))
    hr = await hr_wait(flux, "b", namespace, reason_of("Ready", "DependencyNotReady"))
    assert condition(hr, "Ready")["status"] == "False"
    assert f"'{namespace}/a'" in condition(hr, "Ready")["message"]
    assert helm(cluster, tmp_path, "list", "-n", namespace) == []

    # a's Ready enqueues b at once: no wait for the 30 s dependency requeue
    await flux.client.apply(helmrelease("a", namespace))
    await hr_wait(flux, "a", namespace, ready, within=60)
    await hr_wait(flux, "b", namespace, ready_with("InstallSucceeded", 1), within=10)


async def test_a_ready_expr_replaces_the_ready_check_of_a_dependency(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    # a suspended dependency is never Ready; the expressions decide alone
    await flux.client.apply(helmrelease("held", namespace, suspend=True))
    await flux.client.apply(helmrelease("c", namespace, dependsOn=[
        {"name": "held", "readyExpr": "dep.spec.suspend == true && self.metadata.name == 'c'"}
    ]))
    await flux.client.apply(helmrelease("d", namespace, dependsOn=[
        {"name": "held", "readyExpr": "dep.spec.suspend == false"}]))
    await flux.client.apply(helmrelease("e", namespace, dependsOn=[{"name": "held"}]))
    await hr_wait(flux, "c", namespace, ready_with("InstallSucceeded", 1), within=60)
    hr = await hr_wait(flux, "d", namespace, reason_of("Ready", "DependencyNotReady"))
    assert condition(hr, "Ready")["message"] == \
        f"dependency '{namespace}/held' is not ready according to readyExpr eval"
    hr = await hr_wait(flux, "e", namespace, reason_of("Ready", "DependencyNotReady"))
    assert condition(hr, "Ready")["message"] == f"dependency '{namespace}/held' is not ready"

    # an expression that does not compile stalls
    await flux.client.apply(helmrelease("f", namespace, dependsOn=[
        {"name": "held", "readyExpr": "nobody.knows"}]))
    hr = await hr_wait(flux, "f", namespace, reason_of("Stalled", "InvalidCELExpression"))
    assert condition(hr, "Ready")["status"] == "False"


async def test_a_suspended_release_is_left_alone_and_force_upgrades_an_in_sync_one(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    runs = flux.reconciler("HelmRelease").helm.runs
    before = sum(runs.values())
    await flux.client.apply(helmrelease("web", namespace, suspend=True))
    await asyncio.sleep(2)
    assert helm(cluster, tmp_path, "list", "-n", namespace) == []
    assert sum(runs.values()) == before
    hr = await flux.get(HELM_API, "HelmRelease", "web", namespace)
    assert not (hr.get("status") or {}).get("history")

    await flux.client.apply(helmrelease("web", namespace, suspend=False))
    await hr_wait(flux, "web", namespace, ready_with("InstallSucceeded", 1), within=90)

    # forceAt equal to requestedAt: an upgrade of an in-sync release, once
    await flux.client.merge_patch(HELM_API, "HelmRelease", "web", {"metadata": {
        "annotations": {"reconcile.fluxcd.io/requestedAt": "f1",
                        "reconcile.fluxcd.io/forceAt": "f1"}}}, namespace)
    hr = await hr_wait(flux, "web", namespace, ready_with("UpgradeSucceeded", 2), within=90)
    assert hr["status"]["lastHandledForceAt"] == "f1"
    await flux.client.merge_patch(HELM_API, "HelmRelease", "web", {"metadata": {
        "annotations": {"reconcile.fluxcd.io/requestedAt": "again"}}}, namespace)
    hr = await hr_wait(flux, "web", namespace,
                       lambda o: o["status"].get("lastHandledReconcileAt") == "again")
    assert hr["status"]["history"][0]["version"] == 2

    # a forceAt that differs from requestedAt is no request
    await flux.client.merge_patch(HELM_API, "HelmRelease", "web", {"metadata": {
        "annotations": {"reconcile.fluxcd.io/requestedAt": "r3",
                        "reconcile.fluxcd.io/forceAt": "f3"}}}, namespace)
    hr = await hr_wait(flux, "web", namespace,
                       lambda o: o["status"].get("lastHandledReconcileAt") == "r3")
    assert hr["status"]["history"][0]["version"] == 2
    assert hr["status"]["lastHandledForceAt"] == "f1"


async def test_a_failing_install_is_uninstalled_retried_then_stalls_until_reset(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    await flux.client.apply(helmrelease(
        "web", namespace, timeout="15s", values={"failDeployment": True},
        install={"remediation": {"retries": 1}}))
    hr = await hr_wait(flux, "web", namespace, reason_of("Stalled", "RetriesExceeded"),
                       within=90, jump=1)
    assert condition(hr, "Stalled")["message"] == "Failed to install after 2 attempt(s)"
    assert condition(hr, "Ready")["status"] == "False"
    assert condition(hr, "Released")["reason"] == "InstallFailed"
    # the retry's install cleared the remediation's condition: Ready tells the failure
    assert condition(hr, "Ready")["reason"] == "InstallFailed"
    assert not condition(hr, "Remediated")
    assert hr["status"]["installFailures"] == 2
    assert not condition(hr, "Reconciling")
    remediated = await events(flux, namespace, "UninstallSucceeded")
    assert remediated == [f"Helm uninstall remediation for release {namespace}/web.v1 "
                          "with chart greeter@0.1.0 succeeded"]
    assert len(await events(flux, namespace, "InstallFailed")) >= 1
    # the first release was uninstalled, the retry is the failed one left in storage
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "failed")]

    # stalled: nothing more happens on its own
    runs = flux.reconciler("HelmRelease").helm.runs
    count = sum(runs.values())
    flux.advance(5)
    await asyncio.sleep(1.5)
    assert sum(runs.values()) == count

    # resetAt equal to requestedAt: the counters start again. With no failure counted
    # against the failed release, Flux upgrades it (no remediation: upgrade retries 0)
    await flux.client.merge_patch(HELM_API, "HelmRelease", "web", {"metadata": {
        "annotations": {"reconcile.fluxcd.io/requestedAt": "r1",
                        "reconcile.fluxcd.io/resetAt": "r1"}}}, namespace)
    hr = await hr_wait(flux, "web", namespace,
                       lambda o: condition(o, "Stalled").get("message")
                       == "Failed to upgrade after 1 attempt(s)", within=90, jump=1)
    assert hr["status"]["lastHandledResetAt"] == "r1"
    assert "installFailures" not in hr["status"]
    assert hr["status"]["upgradeFailures"] == 1
    assert condition(hr, "Released")["reason"] == "UpgradeFailed"
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "failed"), (2, "failed")]


async def test_a_failing_upgrade_with_the_uninstall_strategy_is_uninstalled(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    spec: dict[str, Any] = {"timeout": "15s",
                            "upgrade": {"remediation": {"retries": 1,
                                                        "strategy": "uninstall"}}}
    await flux.client.apply(helmrelease("web", namespace, **spec))
    await hr_wait(flux, "web", namespace, ready_with("InstallSucceeded", 1), within=90)
    await flux.client.apply(helmrelease("web", namespace, values={"failDeployment": True},
                                        **spec))
    await hr_wait(flux, "web", namespace, lambda o: condition(o, "Stalled").get("status")
                  == "True", within=90, jump=1)
    assert f"Helm uninstall remediation for release {namespace}/web.v2 with chart " \
        "greeter@0.1.0 succeeded" in await events(flux, namespace, "UninstallSucceeded")
    assert not await events(flux, namespace, "RollbackSucceeded")
    # uninstalled, the release is absent: the next reconcile installs, which fails
    # with install retries 0 and stalls (Flux's state machine: Absent → install)
    hr = await flux.get(HELM_API, "HelmRelease", "web", namespace)
    assert condition(hr, "Stalled")["message"] == "Failed to install after 1 attempt(s)"
    assert condition(hr, "Ready")["reason"] == "InstallFailed"
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "failed")]


async def test_an_upgrade_with_retry_on_failure_is_retried_at_its_interval_not_remediated(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    spec: dict[str, Any] = {
        "timeout": "15s",
        "upgrade": {"strategy": {"name": "RetryOnFailure", "retryInterval": "1m"},
                    "remediation": {"retries": 3}}}
    await flux.client.apply(helmrelease("web", namespace, **spec))
    await hr_wait(flux, "web", namespace, ready_with("InstallSucceeded", 1), within=90)

    await flux.client.apply(helmrelease("web", namespace, values={"failDeployment": True},
                                        **spec))
    hr = await hr_wait(flux, "web", namespace, reason_of("Released", "UpgradeFailed"),
                       within=90)
    await asyncio.sleep(2)  # no backoff retry, no remediation meanwhile
    history = helm(cluster, tmp_path, "history", "web", "-n", namespace)
    # helm leaves the last good release deployed when an upgrade fails
    assert [(h["revision"], h["status"]) for h in history] == [(1, "deployed"),
                                                               (2, "failed")]
    hr = await flux.get(HELM_API, "HelmRelease", "web", namespace)
    assert not condition(hr, "Remediated")
    assert condition(hr, "Ready")["status"] == "False"
    assert condition(hr, "Ready")["reason"] == "UpgradeFailed"
    assert not condition(hr, "Stalled")

    flux.advance(61)  # the retry interval
    await until(lambda: [(h["revision"], h["status"]) for h in helm(
        cluster, tmp_path, "history", "web", "-n", namespace)][-1] == (3, "failed"),
        within=60)
    hr = await hr_wait(flux, "web", namespace,
                       lambda o: o["status"]["history"][0]["version"] == 3
                       and condition(o, "Released").get("reason") == "UpgradeFailed")
    assert not condition(hr, "Remediated")


async def test_ignored_test_failures_keep_it_ready_history_is_bounded_values_from_secret(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, tmp_path: Path, dev_only: None) -> None:
    await setup_chart(flux, helm_cli, repo, namespace)
    await flux.client.apply({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "greeting", "namespace": namespace},
        "stringData": {"text": "from-secret"}})

    def release(n: int) -> dict[str, Any]:
        return helmrelease(
            "web", namespace, maxHistory=2, timeout="20s",
            test={"enable": True, "ignoreFailures": True},
            values={"failTest": True, "round": n},
            valuesFrom=[{"kind": "Secret", "name": "greeting", "valuesKey": "text",
                         "targetPath": "greeting"}])

    await flux.client.apply(release(1))
    hr = await hr_wait(flux, "web", namespace,
                       lambda o: ready(o) and
                       condition(o, "TestSuccess").get("reason") == "TestFailed", within=90)
    assert condition(hr, "Ready")["reason"] == "InstallSucceeded"
    assert hr["status"]["history"][0]["testHooks"]["web-smoke"]["phase"] == "Failed"
    assert not hr["status"].get("installFailures")
    assert cluster.kubectl_json("get", "cm", "web", "-n", namespace)["data"]["greeting"] \
        == "from-secret"

    for n in (2, 3):
        await flux.client.apply(release(n))
        hr = await hr_wait(flux, "web", namespace,
                           lambda o, n=n: ready(o) and o["status"]["history"][0]["version"]
                           == n and bool(o["status"]["history"][0].get("testHooks")),
                           within=90)
    assert condition(hr, "Ready")["reason"] == "UpgradeSucceeded"
    versions = sorted(int(s["metadata"]["labels"]["version"])
                      for s in release_secrets(cluster, namespace, "web"))
    assert versions == [2, 3]


async def test_no_proxy_session_token_reaches_a_condition_an_event_or_a_log(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster, caplog: pytest.LogCaptureFixture, dev_only: None) -> None:
    caplog.set_level(logging.DEBUG)
    await setup_chart(flux, helm_cli, repo, namespace)
    proxy = flux.reconciler("HelmRelease").proxy
    tokens: set[str] = set()

    async def collect() -> None:
        while True:
            tokens.update(proxy.tokens())
            await asyncio.sleep(0.005)

    async with _background(collect()):
        await flux.client.apply(helmrelease("web", namespace, timeout="10s",
                                            values={"failDeployment": True}))
        hr = await hr_wait(flux, "web", namespace, reason_of("Released", "InstallFailed"),
                           within=90)
    assert tokens, "no helm session was seen"
    assert "web-app" in condition(hr, "Released")["message"]
    listed = await flux.client.list_all("v1", "Event", namespace)
    texts = [str(hr)] + [str(e) for e in listed.items] + \
        [r.getMessage() + str(r.__dict__) for r in caplog.records]
    assert any("Last Helm logs" in t for t in texts)
    assert any(r.name.startswith("fluxd.helm") for r in caplog.records)
    for token in tokens:
        assert not any(token in t for t in texts)


@contextlib.asynccontextmanager
async def _background(work: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
