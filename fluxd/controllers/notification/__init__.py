"""Flux's notification-controller: events matched against Alerts and sent through
Providers; Receivers turning webhooks into reconcile requests.

Every controller's events arrive over the in-process event bus (a subscription taken at
start-up, so nothing is lost while the caches sync); events from controllers outside the
process arrive on Flux's intake endpoint (``[notification] events_address``). Alerts and
Providers have no status in ``v1beta3``: they are cached and read at dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fluxd.api.notification import API_VERSION_V1BETA3
from fluxd.clock import Clock
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.notification import events_server, receiver
from fluxd.controllers.notification.dispatch import Dispatcher
from fluxd.listen import serve_app
from fluxd.runtime.manager import Service

log = logging.getLogger("fluxd.notification")

CONTROLLER = "notification-controller"


def controllers(context: ControllerContext) -> list[Contribution]:
    settings = context.settings
    dispatcher = Dispatcher(
        client=context.client,
        alerts=context.cache.informer(API_VERSION_V1BETA3, "Alert"),
        provider_objects=context.cache.informer(API_VERSION_V1BETA3, "Provider"),
        recorder=context.recorder(CONTROLLER), clock=context.clock,
        window=float(settings.notification.rate_limit_interval),
        concurrency=settings.notification.concurrent_sends,
        provider_concurrency=settings.notification.concurrent_sends_per_provider,
        queue_bytes=settings.notification.queue_max_bytes,
        no_cross_namespace_refs=settings.access.no_cross_namespace_refs,
        registry=context.registry)
    subscription = context.events.subscribe(CONTROLLER, maxsize=10_000)

    async def consume() -> None:
        async for event in subscription:
            dispatcher.submit(event)

    @contextlib.asynccontextmanager
    async def dispatch() -> AsyncIterator[object]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_supervised(dispatcher.run, "dispatch", context.clock),
                                       name="notification dispatch"),
                     group.create_task(_supervised(consume, "bus", context.clock),
                                       name="notification bus")]
            try:
                yield dispatcher
            finally:
                for task in tasks:
                    task.cancel()

    events = events_server.EventIntake(dispatcher, clock=context.clock, settings=settings,
                                       registry=context.registry)

    @contextlib.asynccontextmanager
    async def intake() -> AsyncIterator[object]:
        async with serve_app(settings.notification.events_address, events.app(),
                             what="event intake", log=log, lingering_time=0,
                             limits=settings.http, clock=context.clock) as server:
            yield server

    return [Service("notification dispatcher", dispatch), Service("event intake", intake),
            *receiver.controllers(context, registry=context.registry)]


async def _supervised(run: Callable[[], Awaitable[None]], what: str, clock: Clock) -> None:
    """Run ``run`` until cancelled; a bug in it is logged and it starts again a second
    later, so it never takes the process down."""
    while True:
        try:
            await run()
            return
        except Exception:
            log.exception("notification %s failed; restarting it", what)
            await clock.sleep(1.0)
