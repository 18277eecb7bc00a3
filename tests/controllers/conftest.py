"""fluxd's controllers running in-process against the cluster fixture.

``flux`` assembles the real manager exactly as ``fluxd run`` does (``app.assemble``),
with leader election off, the artifact store in a temp dir and its HTTP server on a free
loopback port, and runs it until the test ends. Its clock is a ``JumpClock``: real time,
which a test jumps forward (``Flux.advance``) instead of waiting out a timeout, retry
interval or poll interval it configured. The CRDs are applied from
``deploy/crds`` first, as a user installs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from fluxd import app
from fluxd.clock import Clock, JumpClock
from fluxd.config import Settings
from fluxd.controllers.context import ControllerContext
from fluxd.kube import KubeClient, NotFound
from fluxd.metrics import Metrics
from fluxd.runtime.manager import Manager
from tests.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Flux:
    client: KubeClient
    manager: Manager
    context: ControllerContext
    storage: Path
    runner: asyncio.Task[int]
    #: where the running services listen (service name → base URL)
    listeners: dict[str, str]
    #: fluxd's clock
    clock: Clock
    #: set, the manager stops as on SIGTERM (the fixture sets it at the end)
    stop: asyncio.Event

    def reconciler(self, kind: str) -> Any:
        """The reconciler the running manager uses for ``kind``."""
        return next(c.reconciler for c in self.manager.controllers if c.kind == kind)

    def advance(self, seconds: float) -> None:
        """Jump fluxd's clock forward: the sleeps and deadlines it reaches end now."""
        assert isinstance(self.clock, JumpClock), "this fluxd runs on a clock that cannot jump"
        self.clock.advance(seconds)

    async def get(self, api_version: str, kind: str, name: str, namespace: str) -> Any:
        return await self.client.get(api_version, kind, name, namespace)

    async def wait(self, api_version: str, kind: str, name: str, namespace: str,
                   check: Callable[[dict[str, Any]], bool], *, within: float = 30,
                   jump: float = 0, jump_while: Callable[[], bool] | None = None) -> Any:
        """The object once ``check`` holds (polled; the controller works meanwhile).
        With ``jump``, fluxd's clock jumps that far at every poll that finds the check
        unmet (and ``jump_while`` true): fluxd's waits pass without the test sitting
        through them; ``within`` stays real time."""
        last: Any = None
        try:
            async with asyncio.timeout(within):
                while True:
                    if self.runner.done():  # the manager failed: its error, not a timeout
                        self.runner.result()
                        raise AssertionError("the manager stopped before the test ended")
                    try:
                        last = await self.get(api_version, kind, name, namespace)
                    except NotFound:
                        last = None
                    if last is not None and check(last):
                        return last
                    if jump and (jump_while is None or jump_while()):
                        self.advance(jump)
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"condition not met within {within}s; last seen: "
                                 f"{(last or {}).get('status')}") from None


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


async def install_crds(client: KubeClient) -> None:
    for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                await client.apply(doc, force=True, field_manager="fluxd-tests")
    await client.refresh_mapping()


@contextlib.asynccontextmanager
async def running_flux(settings: Settings, client: KubeClient, clock: Clock, storage: Path, *,
                       controllers: app.ControllersFactory = app.flux_controllers,
                       stop_within: float = 30) -> AsyncIterator[Flux]:
    """The manager ``fluxd run`` assembles, running until the block ends."""
    registry = CollectorRegistry()
    assembly = app.assemble(settings, client=client, clock=clock, registry=registry,
                            metrics=Metrics(registry, process_metrics=False),
                            controllers=controllers)
    manager, context = assembly.manager, assembly.context
    stop = asyncio.Event()
    # a plain task, not a task group: a manager that fails must fail the test with its
    # own error, not cancel the test's task
    runner = asyncio.create_task(manager.run(stop), name="fluxd manager")
    try:
        yield Flux(client, manager, context, storage, runner, assembly.listeners, clock,
                   stop)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(runner, stop_within)
        finally:
            context.events.close()


@pytest.fixture
def flux_overrides(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """Settings groups laid over the ``flux`` fixture's; a test sets them with
    ``@pytest.mark.parametrize("flux_overrides", [{...}], indirect=True)``."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
async def flux(cluster: Cluster, tmp_path: Path,
               flux_overrides: dict[str, dict[str, Any]]) -> AsyncIterator[Flux]:
    groups: dict[str, dict[str, Any]] = {
        "kube": {"kubeconfig": str(cluster.kubeconfig)},
        "leader_election": {"enabled": False},
        "server": {"metrics_address": "127.0.0.1:0"},
        # port 0: the artifact server takes a free port and advertises it
        "storage": {"path": str(tmp_path / "storage"), "address": "127.0.0.1:0"},
        "reconcile": {"min_retry_delay": "100ms", "max_retry_delay": "1s"},
        "shutdown": {"grace_period": "5s"},
        "kustomize": {"health_poll_interval": "500ms"},
        "notification": {"events_address": "127.0.0.1:0", "receiver_address": "127.0.0.1:0"},
    }
    for group, values in flux_overrides.items():
        groups[group] = {**groups.get(group, {}), **values}
    settings = Settings.model_validate(groups)
    clock = JumpClock()
    async with await KubeClient.connect(clock=clock, kubeconfig=str(cluster.kubeconfig),
                                        field_manager="source-controller") as client:
        await install_crds(client)
        async with running_flux(settings, client, clock, tmp_path / "storage") as flux:
            yield flux
