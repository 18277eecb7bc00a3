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
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from fluxd import config
from fluxd import logging as fluxlog
from fluxd.clock import Clock, SystemClock
from fluxd.config import Settings
from fluxd.kube import KubeClient
from fluxd.metrics import Metrics
from fluxd.runtime.events import EventBus
from fluxd.runtime.manager import ControllerContext, ControllerSpec, Manager

log = logging.getLogger("fluxd")

#: builds the controllers of a process from its shared parts
ControllersFactory = Callable[[ControllerContext], list[ControllerSpec]]


def no_controllers(context: ControllerContext) -> list[ControllerSpec]:
    """The Flux controllers are added by the issues that build them."""
    return []


def identity() -> str:
    """This process's leader-election identity: pod (host) name and a unique suffix."""
    return f"{socket.gethostname()}_{os.getpid()}"


async def run(settings: Settings, *, config_path: Path | None,
              controllers: ControllersFactory = no_controllers,
              clock: Clock | None = None,
              overrides: Mapping[str, Mapping[str, object]] | None = None) -> int:
    clock = clock or SystemClock()
    fluxlog.setup(settings.log.level, settings.log.encoding)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    async with await KubeClient.connect(
            clock=clock, kubeconfig=settings.kube.kubeconfig, context=settings.kube.context,
            qps=settings.kube.qps, burst=settings.kube.burst) as client:
        manager = Manager(settings=settings, clock=clock, client=client, registry=registry,
                          metrics=metrics, identity=identity())
        bus = EventBus()
        context = ControllerContext(client=client, cache=manager.cache, settings=settings,
                                    clock=clock, events=bus, instance=socket.gethostname())
        for spec in controllers(context):
            manager.add_controller(spec)
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
            code = await manager.run(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            bus.close()
        log.info("fluxd stopped", extra=fluxlog.fields(exitCode=code))
        return code


async def run_dev(settings: Settings, *, config_path: Path | None,
                  controllers: ControllersFactory = no_controllers,
                  overrides: Mapping[str, Mapping[str, object]] | None = None) -> int:
    """``fluxd dev``: the controllers against an embedded development cluster."""
    from fluxd.devcluster.runner import DevCluster

    fluxlog.setup(settings.log.level, settings.log.encoding)
    dev = settings.devcluster
    async with DevCluster.run(host=dev.host, port=dev.port, ready_delay=dev.ready_delay,
                              history_size=dev.watch_history) as cluster:
        path = cluster.write_kubeconfig(dev.kubeconfig).resolve()
        log.info("development cluster (in memory, not for production) at %s; "
                 "export KUBECONFIG=%s", cluster.url, path)
        kube = {**dict((overrides or {}).get("kube", {})), "kubeconfig": str(path)}
        merged = {**dict(overrides or {}), "kube": kube}
        settings = settings.model_copy(update={"kube": settings.kube.model_copy(
            update={"kubeconfig": str(path)})})
        return await run(settings, config_path=config_path, controllers=controllers,
                         overrides=merged)
