"""How a Kustomization reconcile ends, as the status, the log, the events and the metrics
tell it: the real manager, the cluster fixture (also behind a loopback proxy that refuses
chosen requests), a real git server and kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd import logging as fluxlog
from fluxd.clock import SystemClock
from fluxd.config import Settings
from fluxd.kube import KubeClient, NotFound
from tests.conftest import Cluster
from tests.controllers.conftest import Flux, condition, install_crds, running_flux
from tests.controllers.kustomize.test_kustomization import (
    API,
    configmap,
    failed_with,
    gitrepo,
    kustomization,
    ready,
    reconciled,
    request,
)
from tests.support.apiproxy import ApiProxy, Request
from tests.support.gitserver import GitServer, head

pytestmark = pytest.mark.anyio

CRD_API = "apiextensions.k8s.io/v1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


def not_in_progress(obj: dict[str, Any]) -> bool:
    """Nothing on the status says the reconcile is still going."""
    return condition(obj, "Ready").get("message") != "Reconciliation in progress" and \
        condition(obj, "Reconciling").get("reason") != "Progressing"


def logged(caplog: pytest.LogCaptureFixture, check: Callable[[str], bool]
           ) -> list[dict[str, Any]]:
    """The kustomize controller's lines whose message passes ``check``, as JSON."""
    formatter = fluxlog.JSONFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records
            if r.name == "fluxd.kustomize" and check(r.getMessage())]


async def lines(caplog: pytest.LogCaptureFixture, check: Callable[[str], bool], *,
                within: float = 10) -> list[dict[str, Any]]:
    """The lines ``logged`` once there is one (the report writes them just after the
    status, which the test may see first)."""
    async with asyncio.timeout(within):
        while not (found := logged(caplog, check)):  # noqa: ASYNC110 - polling the log
            await asyncio.sleep(0.05)
    return found


def metric(flux: Flux, name: str, **labels: str) -> float:
    registry = flux.context.registry
    assert registry is not None
    return registry.get_sample_value(name, {"controller": "kustomization", **labels}) or 0.0


async def counted(flux: Flux, name: str, *, within: float = 10, **labels: str) -> float:
    """The metric once it is above zero (the controller counts a reconcile after its
    report)."""
    async with asyncio.timeout(within):
        while not (value := metric(flux, name, **labels)):  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.05)
    return value


async def event(flux: Flux, namespace: str, reason: str, *,
                within: float = 10) -> dict[str, Any]:
    """The first Kubernetes Event with ``reason`` in ``namespace``, once there is one."""
    async with asyncio.timeout(within):
        while True:
            events = await flux.client.list_all("v1", "Event", namespace)
            found = [e for e in events.items if e["reason"] == reason]
            if found:
                return dict(found[0])
            await asyncio.sleep(0.1)


async def test_an_inventory_id_that_does_not_parse_fails_the_reconcile_once(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, retryInterval="2s"))
    obj = await flux.wait(API, "Kustomization", "app", namespace, ready)
    good = obj["status"]["inventory"]["entries"]
    # hand-edited: an entry the next prune cannot read
    await flux.client.patch_status(API, "Kustomization", "app", {"status": {"inventory": {
        "entries": [*good, {"id": "not-an-id", "v": "v1"}]}}}, namespace)
    await request(flux, "Kustomization", "app", namespace)
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ReconciliationFailed"))
    assert "unable to parse stored object metadata: not-an-id" in \
        condition(obj, "Ready")["message"]
    assert not_in_progress(obj)
    assert obj["status"]["history"][0]["lastReconciledStatus"] == "ReconciliationFailed"
    # as Flux, the inventory of the apply replaced the unreadable one: the retry succeeds
    obj = await flux.wait(API, "Kustomization", "app", namespace, ready, within=15)
    assert obj["status"]["inventory"]["entries"] == good


@pytest.fixture
async def proxied(cluster: Cluster, tmp_path: Path) -> AsyncIterator[tuple[Flux, ApiProxy]]:
    """The manager, as the ``flux`` fixture runs it, talking to the cluster through an
    ``ApiProxy``."""
    if not ApiProxy.supports(cluster.kubeconfig):
        pytest.skip("the cluster's kubeconfig does not authenticate with a bearer token")
    async with ApiProxy.running(cluster.kubeconfig) as proxy:
        kubeconfig = proxy.write_kubeconfig(tmp_path / "proxied.kubeconfig")
        settings = Settings.model_validate({
            "kube": {"kubeconfig": str(kubeconfig)},
            "leader_election": {"enabled": False},
            "server": {"metrics_address": "127.0.0.1:0"},
            "storage": {"path": str(tmp_path / "storage"), "address": "127.0.0.1:0"},
            "reconcile": {"min_retry_delay": "100ms", "max_retry_delay": "1s"},
            "shutdown": {"grace_period": "5s"},
            "kustomize": {"health_poll_interval": "500ms"},
            "notification": {"events_address": "127.0.0.1:0",
                             "receiver_address": "127.0.0.1:0"},
        })
        clock = SystemClock()
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig),
                                            field_manager="source-controller") as client:
            await install_crds(client)
            async with running_flux(settings, client, clock, tmp_path / "storage") as flux:
                yield flux, proxy


def gadget_crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": CRD_API, "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget",
                           "listKind": "GadgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "properties": {"spec": {
                                       "type": "object",
                                       "properties": {"size": {"type": "integer"}}}}}}}]}}


async def test_a_rest_mapping_refresh_that_fails_during_apply_fails_the_reconcile(
        proxied: tuple[Flux, ApiProxy], server: GitServer, namespace: str) -> None:
    flux, proxy = proxied
    group = f"t{uuid.uuid4().hex[:10]}.example.com"
    crd = gadget_crd(group)
    gadget = {"apiVersion": f"{group}/v1", "kind": "Gadget",
              "metadata": {"name": "g", "namespace": namespace}, "spec": {"size": 1}}
    server.make_repo("app", {"crd.yaml": yaml.safe_dump(crd),
                             "gadget.yaml": yaml.safe_dump(gadget)})
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"

    def discovery_down_once_the_crd_is_written(seen: Request) -> bool:
        # the apply writes the CRD, then refreshes its REST mapping to apply the Gadget
        _, path, _ = seen
        return path in ("/api", "/apis") and any(
            m == "PATCH" and p == crd_path and "dryRun" not in q for m, p, q in proxy.seen)

    proxy.refuse = discovery_down_once_the_crd_is_written
    try:
        await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
        await flux.client.create(kustomization("app", namespace, prune=False,
                                               retryInterval="1s"))
        obj = await flux.wait(API, "Kustomization", "app", namespace,
                              failed_with("ReconciliationFailed"))
        assert proxy.refused
        # the refresh itself failed (not the dry-run of the Gadget, which names it)
        assert condition(obj, "Ready")["message"] == \
            "the server is currently unable to handle the request"
        assert not_in_progress(obj)
        assert condition(obj, "Reconciling")["reason"] == "ProgressingWithRetry"
        assert obj["status"]["lastAttemptedRevision"] == obj["status"]["history"][0][
            "metadata"]["revision"]
        # discovery back: the retry applies the Gadget
        proxy.refuse = lambda _: False
        obj = await flux.wait(API, "Kustomization", "app", namespace, ready, within=20)
        ids = [e["id"] for e in obj["status"]["inventory"]["entries"]]
        assert f"{namespace}_g_{group}_Gadget" in ids
    finally:
        proxy.refuse = lambda _: False
        with contextlib.suppress(NotFound):
            await flux.client.delete(CRD_API, "CustomResourceDefinition",
                                     crd["metadata"]["name"])


async def test_a_success_is_logged_with_the_revision_and_the_apply_change_set(
        flux: Flux, server: GitServer, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fluxd.kustomize")
    repo = server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    revision = f"main@sha1:{head(repo)}"
    [applied] = await lines(caplog, lambda m: m == "server-side apply completed")
    assert applied["level"] == "info"
    assert applied["output"] == {f"ConfigMap/{namespace}/settings": "created"}
    assert applied["revision"] == revision
    finished = await lines(caplog, lambda m: m.startswith("Reconciliation finished in "))
    assert finished[0]["level"] == "info"
    assert re.fullmatch(r"Reconciliation finished in \S+, next run in 10m0s",
                        finished[0]["msg"])
    assert finished[0]["revision"] == revision
    assert not logged(caplog, lambda m: m.startswith("Reconciliation failed"))
    done = await event(flux, namespace, "ReconciliationSucceeded")
    assert done["type"] == "Normal"
    assert done["message"].startswith("Reconciliation finished in ")
    assert done["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/revision"] == revision


async def test_a_failure_is_an_error_line_a_warning_and_a_counted_error_retried_later(
        flux: Flux, server: GitServer, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fluxd.kustomize")
    repo = server.make_repo("app", {"kustomization.yaml": yaml.safe_dump(
        {"resources": ["missing.yaml"]})})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, retryInterval="1m"))
    obj = await flux.wait(API, "Kustomization", "app", namespace, failed_with("BuildFailed"))
    assert not_in_progress(obj)
    failed = await lines(caplog, lambda m: m.startswith("Reconciliation failed after "))
    assert failed[0]["level"] == "error"
    assert re.fullmatch(r"Reconciliation failed after \S+, next try in 1m0s", failed[0]["msg"])
    assert failed[0]["revision"] == f"main@sha1:{head(repo)}"
    assert "missing.yaml" in failed[0]["error"]
    assert "reason" not in failed[0]
    assert (await event(flux, namespace, "BuildFailed"))["type"] == "Warning"
    # a failure, retried at the retry interval: an error, never a terminal one
    assert await counted(flux, "controller_runtime_reconcile_errors_total") >= 1
    assert metric(flux, "controller_runtime_terminal_reconcile_errors_total") == 0


async def test_a_dependency_wait_is_an_info_line_and_no_error(
        flux: Flux, server: GitServer, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fluxd.kustomize")
    server.make_repo("app", {"cm.yaml": configmap("a", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, dependsOn=[{"name": "first"}]))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("DependencyNotReady"))
    assert f"dependency '{namespace}/first' not found" in condition(obj, "Ready")["message"]
    waits = await lines(caplog, lambda m: m.startswith("Dependencies do not meet"))
    assert waits[0]["level"] == "info"
    assert waits[0]["msg"] == "Dependencies do not meet ready condition, retrying in 30s"
    assert not logged(caplog, lambda m: m.startswith("Reconciliation failed"))
    # counted as a requeue, not an error, and announced by no event (as Flux's
    # source-not-found and artifact-not-found waits; Flux sends an info event here)
    await counted(flux, "controller_runtime_reconcile_total", result="requeue_after")
    assert metric(flux, "controller_runtime_reconcile_errors_total") == 0
    events = await flux.client.list_all("v1", "Event", namespace)
    assert not [e for e in events.items if e["reason"] == "DependencyNotReady"]


async def test_the_build_path_taken_is_logged_at_debug_with_the_reason(
        flux: Flux, server: GitServer, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxd.kustomize")
    server.make_repo("app", {
        "plain/cm.yaml": configmap("plain", namespace, a="1"),
        # transformer configurations: left to kustomize
        "overlay/kustomization.yaml": "resources: [cm.yaml]\nconfigurations: [conf.yaml]\n",
        "overlay/conf.yaml": "commonLabels: []\n",
        "overlay/cm.yaml": configmap("overlay", namespace, a="1"),
        "elsewhere/cm.yaml": configmap("elsewhere", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("plain", namespace, path="plain"))
    await flux.client.create(kustomization("overlay", namespace, path="./overlay"))
    await flux.wait(API, "Kustomization", "plain", namespace, ready)
    await flux.wait(API, "Kustomization", "overlay", namespace, ready)

    [native] = await lines(caplog, lambda m: m == "build: native")
    assert native["level"] == "debug" and native["path"] == "plain"
    [kustomize] = await lines(caplog, lambda m: m == "build: kustomize")
    assert kustomize["level"] == "debug" and kustomize["path"] == "./overlay"
    assert "configurations" in kustomize["reason"]  # why the native build gave up
    assert kustomize["written"] == 3  # the overlay's files, not the artifact's five
    assert "wholeArtifact" not in kustomize
    await reconciled(flux, "overlay", namespace, "again")
    reused = [line["path"] for line in logged(caplog, lambda m: m == "build: reused")]
    assert "./overlay" in reused
    assert len(logged(caplog, lambda m: m == "build: kustomize")) == 1
