"""The Helm actions run with the real helm binary against the cluster fixture."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from fluxd.api.helm import HelmReleaseSpec
from fluxd.clock import JumpClock, SystemClock, TimerClock
from fluxd.controllers.helm import action
from fluxd.controllers.helm.action import ActionResult, Helm, HelmConnection
from tests.conftest import Cluster, tool
from tests.support.charts import package_chart, write_release_chart
from tests.support.helmrepo import HelmCLI

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHART = Path("/charts/greeter-0.1.0.tgz")


def spec(**fields: Any) -> HelmReleaseSpec:
    return HelmReleaseSpec.model_validate(
        {"interval": "5m", "chartRef": {"kind": "HelmChart", "name": "greeter"}, **fields})


# --------------------------------------------------------------------------- argv


def test_every_option_maps_to_its_helm_flag() -> None:
    full = spec(
        targetNamespace="apps", timeout="2m", maxHistory=2, waitStrategy={"name": "legacy"},
        install={"timeout": "3m", "disableTakeOwnership": True, "disableWaitForJobs": True,
                 "disableHooks": True, "disableOpenAPIValidation": True,
                 "disableSchemaValidation": True, "replace": True, "crds": "Skip",
                 "createNamespace": True, "serverSideApply": False},
        upgrade={"timeout": "4m", "disableWait": True, "disableHooks": True,
                 "disableOpenAPIValidation": True, "disableSchemaValidation": True,
                 "force": True, "preserveValues": True, "cleanupOnFail": True,
                 "disableTakeOwnership": True, "serverSideApply": "enabled"},
        test={"timeout": "1m", "filters": [{"name": "smoke"},
                                           {"name": "slow", "exclude": True}]},
        rollback={"timeout": "90s", "disableWaitForJobs": True, "disableHooks": True,
                  "force": True, "cleanupOnFail": True, "recreate": True,
                  "serverSideApply": True},
        uninstall={"timeout": "30s", "disableHooks": True, "keepHistory": True,
                   "disableWait": True, "deletionPropagation": "orphan"})
    renderer = ["--post-renderer", "fluxd", "--post-renderer-args", "x"]
    assert action.install_args(full, release="r", namespace="apps", chart=CHART,
                               post_renderer=renderer) == [
        "install", "r", str(CHART), "--namespace=apps", "--values=-", "--timeout=3m",
        "--hide-notes", "--wait=legacy", "--server-side=false", "--no-hooks",
        "--disable-openapi-validation", "--skip-schema-validation", "--replace",
        "--create-namespace", "--skip-crds", *renderer]
    assert action.upgrade_args(full, release="r", namespace="apps", chart=CHART,
                               server_side=True) == [
        "upgrade", "r", str(CHART), "--namespace=apps", "--values=-", "--timeout=4m",
        "--hide-notes", "--wait=hookOnly", "--server-side=true", "--force-conflicts",
        "--history-max=2", "--reuse-values", "--no-hooks", "--disable-openapi-validation",
        "--skip-schema-validation", "--force-replace", "--cleanup-on-fail"]
    assert action.test_args(full, release="r", namespace="apps") == [
        "test", "r", "--namespace=apps", "--timeout=1m", "--filter=name=smoke",
        "--filter=!name=slow"]
    assert action.rollback_args(full, release="r", namespace="apps", version=3,
                                server_side=True) == [
        "rollback", "r", "3", "--namespace=apps", "--timeout=90s", "--wait=legacy",
        "--server-side=true", "--force-conflicts", "--history-max=2", "--no-hooks",
        "--force-replace", "--cleanup-on-fail"]
    assert action.uninstall_args(full, release="r", namespace="apps") == [
        "uninstall", "r", "--namespace=apps", "--timeout=30s", "--wait=hookOnly",
        "--cascade=orphan", "--no-hooks", "--keep-history"]


def test_defaults_are_flux_defaults() -> None:
    plain = spec()
    assert action.install_args(plain, release="r", namespace="n", chart=CHART) == [
        "install", "r", str(CHART), "--namespace=n", "--values=-", "--timeout=5m0s",
        "--hide-notes", "--wait=watcher", "--wait-for-jobs", "--server-side=true",
        "--force-conflicts", "--take-ownership", "--skip-crds"]
    assert action.upgrade_args(plain, release="r", namespace="n", chart=CHART,
                               server_side=None) == [
        "upgrade", "r", str(CHART), "--namespace=n", "--values=-", "--timeout=5m0s",
        "--hide-notes", "--wait=watcher", "--wait-for-jobs", "--server-side=auto",
        "--history-max=5", "--reset-values", "--take-ownership"]
    assert action.rollback_args(plain, release="r", namespace="n", version=None,
                                server_side=False) == [
        "rollback", "r", "--namespace=n", "--timeout=5m0s", "--wait=watcher",
        "--wait-for-jobs", "--server-side=false", "--history-max=5"]
    assert action.uninstall_args(plain, release="r", namespace="n") == [
        "uninstall", "r", "--namespace=n", "--timeout=5m0s", "--wait=watcher",
        "--cascade=background"]


def test_create_namespace_needs_a_target_namespace_and_crds_follow_their_policy() -> None:
    own = spec(install={"createNamespace": True, "skipCRDs": True})
    assert "--create-namespace" not in action.install_args(
        own, release="r", namespace="n", chart=CHART)
    assert action.install_crd_policy(own) == "Skip"
    assert action.install_crd_policy(spec(install={"skipCRDs": True, "crds": "Create"})) \
        == "Create"
    assert action.install_crd_policy(spec()) == "Create"
    assert action.upgrade_crd_policy(spec()) == "Create"
    assert action.wait_strategy(spec(waitStrategy={"name": "poller"}), False) == "watcher"


# --------------------------------------------------------------------------- cluster


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    directory = write_release_chart(tmp_path / "src", hook=True, crd_file=True)
    return package_chart(HelmCLI(tool("helm"), tmp_path / "pack-home"), directory,
                         tmp_path / "charts")


@pytest.fixture
def conn(cluster: Cluster) -> HelmConnection:
    return HelmConnection(cluster.kubeconfig)


def make_helm(tmp_path: Path, clock: TimerClock | None = None, **options: Any) -> Helm:
    return Helm(binary=tool("helm"), clock=clock or SystemClock(), home=tmp_path / "helm",
                **options)


async def releases(cluster: Cluster, namespace: str, name: str) -> list[tuple[int, str]]:
    """(revision, status) of the release's storage Secrets, oldest first."""
    found = await asyncio.to_thread(cluster.kubectl_json, "get", "secrets", "-n", namespace,
                                    "-l", f"owner=helm,name={name}")
    return sorted((int(s["metadata"]["labels"]["version"]), s["metadata"]["labels"]["status"])
                  for s in found["items"])


async def configmap(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    obj = await asyncio.to_thread(cluster.kubectl_json, "get", "cm", name, "-n", namespace)
    data: dict[str, str] = obj["data"]
    return data


def assert_ok(result: ActionResult) -> None:
    assert result.ok, f"{result.action} failed: {result.error}\n{result.output}"


async def test_release_lifecycle(cluster: Cluster, conn: HelmConnection, chart: Path,
                                 tmp_path: Path) -> None:
    target = f"t-{uuid.uuid4().hex[:10]}"
    release = spec(targetNamespace=target, maxHistory=2, install={"createNamespace": True},
                   test={"enable": True})
    helm = make_helm(tmp_path)
    try:
        installed = await helm.install(conn, release="greet", namespace=target, chart=chart,
                                       values={"greeting": "hi"}, spec=release)
        assert_ok(installed)
        assert (installed.action, installed.revision, installed.returncode) == \
            ("install", 1, 0)
        assert installed.duration > 0
        # --create-namespace made the target namespace; the chart's CRD is left to the
        # controller's CRD policy (helm is told to skip it)
        assert await configmap(cluster, target, "greet") == {"greeting": "hi"}
        assert (await asyncio.to_thread(cluster.kubectl, "get", "crd",
                                        "widgets.greeter.fluxd.test", check=False)
                ).returncode != 0
        assert_ok(await helm.test(conn, release="greet", namespace=target, spec=release))

        for revision, greeting in ((2, "hello"), (3, "bonjour")):
            upgraded = await helm.upgrade(conn, release="greet", namespace=target,
                                          chart=chart, values={"greeting": greeting},
                                          spec=release)
            assert_ok(upgraded)
            assert upgraded.revision == revision
        assert await configmap(cluster, target, "greet") == {"greeting": "bonjour"}
        # --history-max=2 leaves two revisions
        assert await releases(cluster, target, "greet") == [(2, "superseded"),
                                                             (3, "deployed")]

        failing = await helm.upgrade(conn, release="greet", namespace=target, chart=chart,
                                     values={"greeting": "hey", "failTest": True},
                                     spec=release)
        assert_ok(failing)
        tested = await helm.test(conn, release="greet", namespace=target, spec=release)
        assert not tested.ok and tested.returncode != 0
        assert "greet-smoke" in tested.error
        filtered = spec(test={"filters": [{"name": "greet-smoke", "exclude": True}]})
        assert_ok(await helm.test(conn, release="greet", namespace=target, spec=filtered))

        rolled = await helm.rollback(conn, release="greet", namespace=target, spec=release,
                                     version=3)
        assert_ok(rolled)
        assert await configmap(cluster, target, "greet") == {"greeting": "bonjour"}
        assert (await releases(cluster, target, "greet"))[-1] == (5, "deployed")

        kept = spec(uninstall={"keepHistory": True})
        assert_ok(await helm.uninstall(conn, release="greet", namespace=target, spec=kept))
        assert (await releases(cluster, target, "greet"))[-1] == (5, "uninstalled")
        gone = await asyncio.to_thread(cluster.kubectl, "get", "cm", "greet", "-n", target,
                                       check=False)
        assert gone.returncode != 0
    finally:
        await asyncio.to_thread(cluster.kubectl, "delete", "namespace", target,
                                "--wait=false", "--ignore-not-found", check=False)


async def test_a_failing_hook_fails_the_install_with_helms_error(
        cluster: Cluster, dev_only: None, conn: HelmConnection, namespace: str, chart: Path,
        tmp_path: Path) -> None:
    result = await make_helm(tmp_path).install(
        conn, release="greet", namespace=namespace, chart=chart,
        values={"failHook": True}, spec=spec(timeout="60s"))
    assert not result.ok and result.returncode == 1
    assert result.error.startswith("INSTALLATION FAILED:"), result.error
    assert "greet-migrate" in result.error
    assert "Error: " in result.output
    assert await releases(cluster, namespace, "greet") == [(1, "failed")]


async def test_a_helm_outliving_its_budget_is_killed(
        cluster: Cluster, dev_only: None, conn: HelmConnection, namespace: str, chart: Path,
        tmp_path: Path) -> None:
    clock = JumpClock()
    helm = make_helm(tmp_path, clock, margin=30)
    async with asyncio.TaskGroup() as group:
        running = group.create_task(helm.install(
            conn, release="greet", namespace=namespace, chart=chart,
            values={"readyAfter": "1h"}, spec=spec(timeout="10m")))
        while await releases(cluster, namespace, "greet") != [(1, "pending-install")]:
            await clock.sleep(0.1)
        clock.advance(3 * 600 + 30)
    result = running.result()
    assert not result.ok and result.returncode < 0
    assert result.error.startswith("helm install did not finish within 30m30s and was "
                                   "stopped"), result.error
    assert result.duration >= 1830
    # killed: helm could not record anything
    assert await releases(cluster, namespace, "greet") == [(1, "pending-install")]


async def test_cancelling_lets_helm_mark_the_release_failed(
        cluster: Cluster, dev_only: None, conn: HelmConnection, namespace: str, chart: Path,
        tmp_path: Path) -> None:
    clock = SystemClock()
    helm = make_helm(tmp_path, clock)
    async with asyncio.TaskGroup() as group:
        running = group.create_task(helm.install(
            conn, release="greet", namespace=namespace, chart=chart,
            values={"readyAfter": "1h"}, spec=spec()))
        while await releases(cluster, namespace, "greet") != [(1, "pending-install")]:
            await clock.sleep(0.1)
        running.cancel()  # the group then waits for helm to stop
    assert running.cancelled()
    assert await releases(cluster, namespace, "greet") == [(1, "failed")]


async def test_secrets_are_masked_and_a_missing_binary_is_an_error(
        cluster: Cluster, conn: HelmConnection, namespace: str, tmp_path: Path) -> None:
    helm = make_helm(tmp_path, secrets=lambda: ["s3cr3t-release", ""])
    result = await helm.uninstall(conn, release="s3cr3t-release", namespace=namespace,
                                  spec=spec())
    assert not result.ok
    assert "not found" in result.error and "***" in result.error
    assert "s3cr3t" not in result.error + result.output

    missing = Helm(binary=str(tmp_path / "no-helm"), clock=SystemClock(),
                   home=tmp_path / "other")
    failed = await missing.test(conn, release="r", namespace=namespace, spec=spec())
    assert (failed.ok, failed.returncode) == (False, -1)
    assert failed.error.startswith("cannot run ")
    assert oct((tmp_path / "other").stat().st_mode & 0o777) == "0o700"
