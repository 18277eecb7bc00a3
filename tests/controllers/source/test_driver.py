"""The source driver: whatever a step raises — or however it stops — the status says the
reconcile failed. End to end: the real manager, the cluster fixture, a real git server, and
a GitRepository reconciler whose Git layer can be made to fail in ways no step foresees."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.clock import JumpClock
from fluxd.config import Settings
from fluxd.controllers import source
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.source.gitrepository import KIND, GitRepositoryReconciler
from fluxd.kube import KubeClient
from fluxd.runtime.manager import ControllerSpec
from tests.conftest import Cluster
from tests.controllers.conftest import Flux, condition, install_crds, running_flux
from tests.support.gitserver import GitServer

pytestmark = pytest.mark.anyio

API = "source.toolkit.fluxcd.io/v1"


class SabotagedGitRepositoryReconciler(GitRepositoryReconciler):
    """GitRepository's reconciler, but its Git work raises ``crash`` (an exception no step
    maps to a condition, as a bug would) or hangs until cancelled, while those are set."""

    crash: Exception | None = None
    hang: bool = False
    git_calls: int = 0

    async def _git(self, work: Any, limit: float) -> Any:
        self.git_calls += 1
        if self.crash is not None:
            raise self.crash
        if self.hang:
            await asyncio.Event().wait()  # until the reconcile's deadline cancels it
        return await super()._git(work, limit)


@dataclasses.dataclass
class Sabotaged:
    flux: Flux
    reconciler: SabotagedGitRepositoryReconciler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


@pytest.fixture
async def sabotaged(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Sabotaged]:
    """The ``flux`` fixture's manager with the sabotaged GitRepository reconciler, a 3 s
    reconcile deadline and fast retries."""
    settings = Settings.model_validate({
        "kube": {"kubeconfig": str(cluster.kubeconfig)},
        "leader_election": {"enabled": False},
        "server": {"metrics_address": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "storage"), "address": "127.0.0.1:0"},
        "reconcile": {"min_retry_delay": "100ms", "max_retry_delay": "1s", "timeout": "3s"},
        "shutdown": {"grace_period": "5s"},
        "notification": {"events_address": "127.0.0.1:0", "receiver_address": "127.0.0.1:0"},
    })
    built: list[SabotagedGitRepositoryReconciler] = []

    def controllers(context: ControllerContext) -> list[Contribution]:
        specs = source.controllers(context)
        for i, spec in enumerate(specs):
            if isinstance(spec, ControllerSpec) and spec.kind == KIND:
                real = spec.reconciler
                assert isinstance(real, GitRepositoryReconciler)
                built.append(SabotagedGitRepositoryReconciler(
                    client=real.client, informer=real.informer, store=real.store,
                    bus=real.bus, recorder=real.recorder, clock=real.clock,
                    settings=real.settings))
                specs[i] = dataclasses.replace(spec, reconciler=built[-1])
        return specs

    clock = JumpClock()
    async with await KubeClient.connect(clock=clock, kubeconfig=str(cluster.kubeconfig),
                                        field_manager="source-controller") as client:
        await install_crds(client)
        async with running_flux(settings, client, clock, tmp_path / "storage",
                                controllers=controllers) as flux:
            yield Sabotaged(flux, built[0])


def gitrepo(name: str, namespace: str, url: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"}}}


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def request(flux: Flux, name: str, namespace: str, value: str) -> None:
    await flux.client.merge_patch(API, "GitRepository", name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": value}}}, namespace)


async def test_an_unexpected_exception_in_a_step_makes_ready_false_with_its_message(
        sabotaged: Sabotaged, server: GitServer, namespace: str) -> None:
    flux, reconciler = sabotaged.flux, sabotaged.reconciler
    server.make_repo("app", {"a.yaml": "v: 1\n"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    good = await flux.wait(API, "GitRepository", "app", namespace, ready)
    # what a ref name that is not UTF-8 once raised from ls-remote
    reconciler.crash = UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "unexpected end of data")
    await request(flux, "app", namespace, "crash")
    failed = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "crash"
        and condition(o, "Ready").get("status") == "False"))
    message = "'utf-8' codec can't decode byte 0xe9 in position 3: unexpected end of data"
    assert condition(failed, "Ready")["reason"] == "ReconciliationFailed"
    assert condition(failed, "Ready")["message"] == message
    assert not condition(failed, "Reconciling")
    assert failed["status"]["artifact"] == good["status"]["artifact"]
    events = await flux.client.list_all("v1", "Event", namespace)
    assert [(e["type"], e["message"]) for e in events.items
            if e["reason"] == "ReconciliationFailed"][:1] == [("Warning", message)]
    # retried with backoff, without being asked again; recovers once the fault is gone
    calls = reconciler.git_calls
    await flux.wait(API, "GitRepository", "app", namespace,
                    lambda o: reconciler.git_calls >= calls + 2)
    reconciler.crash = None
    await flux.wait(API, "GitRepository", "app", namespace, ready)


async def test_a_reconcile_cut_off_by_its_deadline_is_not_written_as_a_success(
        sabotaged: Sabotaged, server: GitServer, namespace: str) -> None:
    flux, reconciler = sabotaged.flux, sabotaged.reconciler
    server.make_repo("app", {"a.yaml": "v: 1\n"})
    await flux.client.create(gitrepo("app", namespace, server.repo_url("app")))
    good = await flux.wait(API, "GitRepository", "app", namespace, ready)
    reconciler.hang = True
    await request(flux, "app", namespace, "hang")
    cut = await flux.wait(API, "GitRepository", "app", namespace, lambda o: (
        o["status"].get("lastHandledReconcileAt") == "hang"
        and condition(o, "Ready").get("status") == "False"), within=20,
        jump=3)  # the reconcile deadline passes at a jump instead of in 3 s
    assert condition(cut, "Ready")["reason"] == "ReconciliationFailed"
    assert condition(cut, "Ready")["message"] == \
        "reconciliation was interrupted before it finished"
    assert cut["status"]["artifact"] == good["status"]["artifact"]
    reconciler.hang = False
    await flux.wait(API, "GitRepository", "app", namespace, ready, within=20)
