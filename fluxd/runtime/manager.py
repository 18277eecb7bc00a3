"""The manager: starts everything in order, stops it in order, applies config reloads.

Start: health/metrics server → queue timer and informers → caches synced → leader
election (standing by counts as ready) → controllers (and lease renewal).

Stop (``stop`` set, e.g. SIGTERM): the queue takes no new work; in-flight reconciles get
``shutdown.grace_period`` to finish (their final status writes are shielded by the
reconcilers); then the lease is released and ``run`` returns 0. Losing the lease stops
the controllers at once and ``run`` returns 1, so Kubernetes restarts the process.

``apply_settings`` is the SIGHUP path: hot-reloadable settings take effect without
dropping queued or in-flight work; the others are reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from fluxd import config, health
from fluxd import logging as fluxlog
from fluxd.clock import Clock
from fluxd.config import Settings
from fluxd.kube import KubeClient
from fluxd.metrics import Metrics
from fluxd.runtime.controller import Controller, Reconciler, Tuning
from fluxd.runtime.handler import EnqueueHandler
from fluxd.runtime.informer import IndexFunc, InformerCache
from fluxd.runtime.leader import (
    ElectionConfig,
    LeaderElector,
    LeadershipLost,
    LeaseNamespaceNotFound,
    lease_name,
)
from fluxd.runtime.ratelimit import ItemExponentialFailure
from fluxd.runtime.workqueue import WorkQueue

log = logging.getLogger("fluxd.manager")


@dataclass
class ControllerSpec:
    """One controller: the kind it reconciles and the Flux controller it belongs to
    (``source``, ``kustomize``, ``helm`` or ``notification``: its concurrency setting)."""

    api_version: str
    kind: str
    group: str
    reconciler: Reconciler
    indexes: Mapping[str, IndexFunc] = field(default_factory=dict)


ServiceFactory = Callable[[], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class Service:
    """Something that runs while leading (a listener, a background consumer): entered
    after leader election, before the controllers start; left after they stop."""

    name: str
    factory: ServiceFactory


#: what the manager runs
Runnable = ControllerSpec | Service


def _lease_namespace_origin(settings: Settings) -> str:
    """The setting that chose the Lease namespace, as a user would change it."""
    if settings.leader_election.namespace:
        return "leader_election.namespace (env FLUXD_LEADER_ELECTION__NAMESPACE)"
    return ("watch.runtime_namespace (env FLUXD_WATCH__RUNTIME_NAMESPACE), as "
            "leader_election.namespace (env FLUXD_LEADER_ELECTION__NAMESPACE) is unset")


def _limits(settings: Settings, specs: list[ControllerSpec]) -> dict[str, int]:
    per_group = settings.concurrency.model_dump()
    return {spec.kind: int(per_group[spec.group]) for spec in specs}


class Manager:
    def __init__(self, *, settings: Settings, clock: Clock, client: KubeClient,
                 registry: CollectorRegistry, metrics: Metrics, identity: str) -> None:
        self.settings = settings
        self._clock = clock
        self._client = client
        self._registry = registry
        self._metrics = metrics
        self._specs: list[ControllerSpec] = []
        r = settings.reconcile
        self._backoff = ItemExponentialFailure(base=r.min_retry_delay, cap=r.max_retry_delay)
        self.queue = WorkQueue(clock=clock, rate_limiter=self._backoff, metrics=metrics)
        metrics.track_workqueues(self.queue.stats)
        watch = settings.watch
        self.cache = InformerCache(
            client, clock=clock, label_selector=watch.label_selector or None,
            namespace=None if watch.all_namespaces else watch.runtime_namespace)
        self.tuning = Tuning(timeout=r.timeout, jitter_percent=r.interval_jitter_percentage)
        self.controllers: list[Controller] = []
        self._services: list[Service] = []
        le = settings.leader_election
        self.elector: LeaderElector | None = None
        if le.enabled:
            lease = lease_name(le.name, watch.label_selector or None)
            self.elector = LeaderElector(
                client, ElectionConfig(
                    namespace=le.namespace or watch.runtime_namespace, name=lease,
                    identity=identity, lease_duration=le.lease_duration,
                    renew_deadline=le.renew_deadline, retry_period=le.retry_period,
                    release_on_cancel=le.release_on_cancel,
                    namespace_origin=_lease_namespace_origin(settings)),
                clock=clock,
                on_change=lambda leading: metrics.leader_changed(lease, leading=leading))
        self.server: health.HealthServer | None = None
        self.phase = "starting"

    def add(self, runnable: Runnable) -> Controller | None:
        """Register a controller (its informer, indexes and queue lane; the controller
        is returned) or a service, before ``run``."""
        if isinstance(runnable, Service):
            self._services.append(runnable)
            return None
        return self._add_controller(runnable)

    def _add_controller(self, spec: ControllerSpec) -> Controller:
        self._specs.append(spec)
        self.queue.set_kind_limit(spec.kind, _limits(self.settings, [spec])[spec.kind])
        informer = self.cache.informer(spec.api_version, spec.kind)
        for name, func in spec.indexes.items():
            informer.add_index(name, func)
        informer.add_handler(EnqueueHandler(self.queue, spec.kind))
        controller = Controller(
            kind=spec.kind, reconciler=spec.reconciler, queue=self.queue,
            metrics=self._metrics, clock=self._clock, tuning=self.tuning,
            exists=lambda key: informer.get(key.namespace, key.name) is not None,
            group=spec.api_version.rpartition("/")[0])
        self.controllers.append(controller)
        return controller

    # --- readiness --------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.cache.has_synced:
            return False, "informer caches are not synced"
        if self.elector is not None and not self.elector.is_leader:
            return True, "standing by for leadership"
        return True, self.phase

    # --- running ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set (returns 0) or leadership is lost (returns 1)."""
        async with health.serve(self.settings.server.metrics_address, registry=self._registry,
                                ready=self.readiness, limits=self.settings.http,
                                clock=self._clock) as server:
            self.server = server
            async with asyncio.TaskGroup() as infra:
                background = [infra.create_task(self.queue.run(), name="workqueue")]
                background += [infra.create_task(i.run(), name=f"informer {i.kind}")
                               for i in self.cache.informers()]
                try:
                    return await self._lead_and_work(stop)
                finally:
                    for task in background:
                        task.cancel()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _until(self, work: Coroutine[Any, Any, object], stop: asyncio.Event) -> bool:
        """Run ``work`` unless ``stop`` comes first; True when ``work`` finished."""
        async with asyncio.TaskGroup() as group:
            job = group.create_task(work)
            stopper = group.create_task(stop.wait())
            await asyncio.wait({job, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finished = job.done() and not job.cancelled()
            job.cancel()
            stopper.cancel()
        return finished

    async def _lead_and_work(self, stop: asyncio.Event) -> int:
        self.phase = "syncing caches"
        if not await self._until(self.cache.wait_for_sync(), stop):
            return 0
        log.info("caches synced", extra=fluxlog.fields(objects=self.cache.object_count()))
        if self.elector is not None:
            self.phase = "waiting for leadership"
            acquired, unstartable = False, False
            try:
                acquired = await self._until(self.elector.acquire(), stop)
            except* LeaseNamespaceNotFound as group:
                # a configuration error: exit as a Flux controller that cannot start
                log.error("unable to start manager",
                          extra=fluxlog.fields(error=str(group.exceptions[0])))
                unstartable = True
            if unstartable:
                return 1
            if not acquired:
                return 0
        self.phase = "leading" if self.elector is not None else "running"
        lost = asyncio.Event()
        code = 0
        async with contextlib.AsyncExitStack() as services:
            for service in self._services:
                log.info("starting %s", service.name)
                await services.enter_async_context(service.factory())
            code = await self._work(stop, lost)
        if self.elector is not None and code == 0 and self.elector.config.release_on_cancel:
            await self.elector.release()
        return code

    async def _work(self, stop: asyncio.Event, lost: asyncio.Event) -> int:
        code = 0
        async with asyncio.TaskGroup() as work:
            workers = [work.create_task(c.run(), name=f"controller {c.name}")
                       for c in self.controllers]
            keeper = work.create_task(self._keep_lease(lost), name="lease renewal")
            await self._until(lost.wait(), stop)
            if lost.is_set():
                log.error("leadership lost: stopping controllers")
                code = 1
                self.queue.shut_down()
                for task in workers:
                    task.cancel()
            else:
                self.phase = "shutting down"
                grace = self.settings.shutdown.grace_period
                log.info("shutting down: waiting up to %gs for in-flight reconciles", grace)
                if not await self.queue.shut_down_with_drain(grace):
                    log.warning("grace period over: cancelling unfinished reconciles")
                    for task in workers:
                        task.cancel()
            keeper.cancel()
        return code

    async def _keep_lease(self, lost: asyncio.Event) -> None:
        if self.elector is None:
            return
        try:
            await self.elector.hold()
        except LeadershipLost as exc:
            log.error("Leader election lost", extra=fluxlog.fields(error=str(exc)))
            lost.set()

    # --- reload -----------------------------------------------------------------------

    def apply_settings(self, new: Settings) -> tuple[list[str], list[str]]:
        """Apply what can change while running; return (applied, needing a restart)."""
        changed = config.changed_settings(self.settings, new)
        applied = [n for n in changed if config.hot_reloadable(n)]
        restart = [n for n in changed if not config.hot_reloadable(n)]
        if any(n.startswith("log.") for n in applied):
            fluxlog.setup(new.log.level, new.log.encoding)
        if any(n.startswith("concurrency.") for n in applied):
            limits = _limits(new, self._specs)
            for controller in self.controllers:
                limit = limits[controller.kind]
                self.queue.set_kind_limit(controller.kind, limit)
                controller.ensure_workers(limit)
                self._metrics.max_concurrent_reconciles.labels(controller.name).set(limit)
        r = new.reconcile
        self._backoff.base, self._backoff.cap = r.min_retry_delay, r.max_retry_delay
        self.tuning.timeout = r.timeout
        self.tuning.jitter_percent = r.interval_jitter_percentage
        self._client.throttle.set_rate(new.kube.qps, new.kube.burst)
        # keep the settings in force: hot ones from the new file, the rest as started
        merged = self.settings.model_dump()
        fresh = new.model_dump()
        for name in applied:
            group, _, key = name.partition(".")
            merged[group][key] = fresh[group][key]
        self.settings = Settings.model_validate(merged)
        return applied, restart
