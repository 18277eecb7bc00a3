"""The composition root of ``fluxd run``: builds everything, wires it, owns the signals.

Nothing here is global: ``run`` creates the clock, logging, Kubernetes client, metrics
registry and manager for one process, so two apps can live in one test process.

Signals: SIGTERM/SIGINT stop (graceful, see ``runtime.manager``); SIGHUP re-reads the
config file — if it is valid the hot-reloadable settings apply at once and the others are
logged as needing a restart; if it is not, the process keeps its configuration and logs
why. ``fluxd_config_reloads_total{result}`` counts both.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from fluxd import config, listen
from fluxd import logging as fluxlog
from fluxd.artifacts.bus import ArtifactBus
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import Clock, SystemClock
from fluxd.config import Settings
from fluxd.controllers import helm, kustomize, notification, source
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.kube import KubeClient
from fluxd.metrics import Metrics
from fluxd.runtime.events import EventBus
from fluxd.runtime.manager import Manager, Service

log = logging.getLogger("fluxd")

if TYPE_CHECKING:
    from fluxd.devcluster.runner import DevCluster

#: builds the controllers (and the services they need) of a process from its shared parts
ControllersFactory = Callable[[ControllerContext], Sequence[Contribution]]


def no_controllers(context: ControllerContext) -> list[Contribution]:
    """No controllers: the runtime alone (tests, benchmarks)."""
    return []


def flux_controllers(context: ControllerContext) -> list[Contribution]:
    """Every Flux controller fluxd has so far."""
    return [*source.controllers(context), *kustomize.controllers(context),
            *helm.controllers(context), *notification.controllers(context)]


def artifact_store(settings: Settings, clock: Clock) -> ArtifactStore:
    """The artifact store of ``[storage]``; leftovers of an interrupted write are removed."""
    s = settings.storage
    port = s.address.rpartition(":")[2]
    advertised = s.advertised_address or f"localhost:{port}"
    store = ArtifactStore(s.path, clock=clock, advertised=advertised,
                          digest_algo=s.digest_algorithm, retention_records=s.retention_records,
                          retention_ttl=s.retention_ttl, durable=s.fsync)
    s.path.mkdir(parents=True, exist_ok=True)
    store.sweep_temporary_files()
    return store


#: collection thresholds for a long-running controller (CPython's are 700, 10, 10)
GC_THRESHOLDS = (10_000, 50, 50)


def tune_gc() -> None:
    """Collect garbage less often than CPython's defaults, which are tuned for short
    scripts: a controller allocates a stream of short-lived JSON objects and keeps a
    large, stable cache, so frequent full collections walk the cache again and again
    (a fifth of the CPU at 1,000 Kustomizations). What the imports created is frozen
    out of the collector's sight for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def identity() -> str:
    """This process's leader-election identity: pod (host) name and a unique suffix."""
    return f"{socket.gethostname()}_{os.getpid()}"


@dataclass
class Assembly:
    """One process's parts as ``assemble`` built them."""

    manager: Manager
    context: ControllerContext
    #: where the running services listen (service name → base URL), as they bound
    #: (port 0 resolved); for logs, tests and the demo
    listeners: dict[str, str] = field(default_factory=dict)

    def listening(self, service: Service) -> Service:
        """``service``, recording the URL of what it serves (when it has one) while it
        runs."""
        listeners = self.listeners

        @contextlib.asynccontextmanager
        async def run() -> AsyncIterator[object]:
            async with service.factory() as running:
                url = getattr(running, "url", None)
                if isinstance(url, str):
                    listeners[service.name] = url
                try:
                    yield running
                finally:
                    listeners.pop(service.name, None)

        return Service(service.name, run)


def assemble(settings: Settings, *, client: KubeClient, clock: Clock,
             registry: CollectorRegistry, metrics: Metrics,
             controllers: ControllersFactory) -> Assembly:
    """The manager of one process with its controllers and services registered."""
    manager = Manager(settings=settings, clock=clock, client=client, registry=registry,
                      metrics=metrics, identity=identity())
    context = ControllerContext(client=client, cache=manager.cache, queue=manager.queue,
                                settings=settings, clock=clock, events=EventBus(),
                                instance=socket.gethostname(),
                                artifacts=artifact_store(settings, clock),
                                artifact_bus=ArtifactBus(), registry=registry)
    assembly = Assembly(manager, context)
    for contribution in controllers(context):
        manager.add(assembly.listening(contribution)
                    if isinstance(contribution, Service) else contribution)
    return assembly


async def run(settings: Settings, *, config_path: Path | None,
              controllers: ControllersFactory = flux_controllers,
              clock: Clock | None = None,
              overrides: Mapping[str, Mapping[str, object]] | None = None) -> int:
    clock = clock or SystemClock()
    fluxlog.setup(settings.log.level, settings.log.encoding)
    tune_gc()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with await KubeClient.connect(
            clock=clock, kubeconfig=settings.kube.kubeconfig, context=settings.kube.context,
            qps=settings.kube.qps, burst=settings.kube.burst, registry=registry) as client:
        assembly = assemble(settings, client=client, clock=clock, registry=registry,
                            metrics=metrics, controllers=controllers)
        manager, context = assembly.manager, assembly.context
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def reload() -> None:
            try:
                new = config.load(config_path, **dict(overrides or {}))
            except (OSError, ValueError) as exc:
                metrics.config_reloaded(success=False, at=clock.now().timestamp())
                log.error("configuration reload failed; keeping the running configuration",
                          extra=fluxlog.fields(error=str(exc).replace("\n", "; ")))
                return
            applied, restart = manager.apply_settings(new)
            metrics.config_reloaded(success=True, at=clock.now().timestamp())
            log.info("configuration reloaded", extra=fluxlog.fields(
                applied=applied, needsRestart=restart))
            if restart:
                log.warning("changed settings take effect only after a restart",
                            extra=fluxlog.fields(settings=restart))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload)
        try:
            with listen.throttle_accept_errors(loop, clock=clock):
                code = await manager.run(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            context.events.close()
        log.info("fluxd stopped", extra=fluxlog.fields(exitCode=code))
        return code


def install_crds(cluster: DevCluster) -> None:
    """Serve fluxd's CRDs (generated from the API models) in a development cluster."""
    from fluxd.api.crd import crd, group_kinds
    from fluxd.api.kinds import all_kinds
    from fluxd.devcluster.cluster import WriteOptions

    rt = cluster.cluster.registry.lookup("apiextensions.k8s.io", "v1",
                                         "customresourcedefinitions")
    assert rt is not None
    for kinds in group_kinds(all_kinds()):
        cluster.cluster.create(rt, "", crd(kinds), opts=WriteOptions(field_manager="fluxd"))
    # part of the cluster fluxd starts with, not a CRD just installed: no discovery delay
    cluster.cluster.registry.settle()


async def run_dev(settings: Settings, *, config_path: Path | None,
                  controllers: ControllersFactory = flux_controllers,
                  overrides: Mapping[str, Mapping[str, object]] | None = None) -> int:
    """``fluxd dev``: the controllers against an embedded development cluster."""

    from fluxd.devcluster.runner import DevCluster

    fluxlog.setup(settings.log.level, settings.log.encoding)
    dev = settings.devcluster
    async with DevCluster.run(host=dev.host, port=dev.port, ready_delay=dev.ready_delay,
                              history_size=dev.watch_history) as cluster:
        path = cluster.write_kubeconfig(dev.kubeconfig).resolve()
        install_crds(cluster)
        log.info("development cluster (in memory, not for production) at %s; "
                 "export KUBECONFIG=%s", cluster.url, path)
        kube = {**dict((overrides or {}).get("kube", {})), "kubeconfig": str(path)}
        merged = {**dict(overrides or {}), "kube": kube}
        settings = settings.model_copy(update={"kube": settings.kube.model_copy(
            update={"kubeconfig": str(path)})})
        return await run(settings, config_path=config_path, controllers=controllers,
                         overrides=merged)
