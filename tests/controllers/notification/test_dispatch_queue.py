"""The dispatcher's queue under load: Providers' lanes, the byte budget, and matching that
never stalls the event loop. Alerts and Providers live in the cluster fixture and reach
the dispatcher through real informers; Providers are loopback webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from fluxd.clock import SystemClock
from fluxd.controllers.notification.dispatch import Dispatcher
from fluxd.kube import KubeClient
from fluxd.runtime.events import Event, EventBus, EventRecorder, ObjectReference
from fluxd.runtime.informer import InformerCache
from tests.conftest import Cluster
from tests.controllers.conftest import install_crds
from tests.support import loopback

pytestmark = pytest.mark.anyio

NOTIFY_API = "notification.toolkit.fluxcd.io/v1beta3"
KS_API = "kustomize.toolkit.fluxcd.io/v1"


@dataclass
class Hook:
    """A webhook that records what it gets; with ``hold`` set, it answers only once
    ``release`` is set (a Provider as slow as we like, without sleeping)."""

    url: str = ""
    hold: bool = False
    received: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    got: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def webhook(*, hold: bool = False) -> AsyncIterator[Hook]:
    state = Hook(hold=hold)

    async def receive(request: web.Request) -> web.Response:
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            if state.hold:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.release.wait(), 60)
            state.received.append(json.loads(await request.read())["message"])
            state.got.set()
            return web.Response()
        finally:
            state.in_flight -= 1

    app = web.Application(client_max_size=4 << 20)
    app.router.add_post("/hook", receive)
    async with loopback.serve(app) as url:
        state.url = f"{url}/hook"
        try:
            yield state
        finally:
            state.release.set()


@dataclass
class Harness:
    client: KubeClient
    cache: InformerCache
    namespace: str

    async def provider(self, name: str, url: str) -> None:
        await self.client.create({
            "apiVersion": NOTIFY_API, "kind": "Provider",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"type": "generic", "address": url, "timeout": "60s"}})

    async def alert(self, name: str, provider: str, source: str, **spec: Any) -> None:
        await self.client.create({
            "apiVersion": NOTIFY_API, "kind": "Alert",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"providerRef": {"name": provider},
                     "eventSources": [{"kind": "Kustomization", "name": source}], **spec}})

    async def cached(self, kind: str, *names: str) -> None:
        informer = self.cache.informer(NOTIFY_API, kind)
        async with asyncio.timeout(10):
            while any(informer.get(self.namespace, n) is None for n in names):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    def dispatcher(self, **options: Any) -> Dispatcher:
        clock = SystemClock()
        return Dispatcher(
            client=self.client, alerts=self.cache.informer(NOTIFY_API, "Alert"),
            provider_objects=self.cache.informer(NOTIFY_API, "Provider"),
            recorder=EventRecorder(self.client, EventBus(), controller="notification-controller",
                                   instance="test", clock=clock),
            clock=clock, **options)

    def event(self, name: str, message: str) -> Event:
        return Event(involved_object=ObjectReference(kind="Kustomization", name=name,
                                                     namespace=self.namespace,
                                                     api_version=KS_API),
                     severity="info",
                     timestamp=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
                     message=message, reason="ReconciliationSucceeded",
                     reporting_controller="kustomize-controller")


@pytest.fixture
async def harness(cluster: Cluster, namespace: str) -> AsyncIterator[Harness]:
    clock = SystemClock()
    async with await KubeClient.connect(clock=clock,
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        await install_crds(client)
        cache = InformerCache(client, clock=clock)
        informers = [cache.informer(NOTIFY_API, "Alert"), cache.informer(NOTIFY_API, "Provider")]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(i.run()) for i in informers]
            async with asyncio.timeout(10):
                for informer in informers:
                    await informer.wait_for_sync()
            try:
                yield Harness(client, cache, namespace)
            finally:
                for task in tasks:
                    task.cancel()


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as group:
        task = group.create_task(dispatcher.run())
        try:
            yield
        finally:
            task.cancel()


async def until(check: Any, within: float = 15) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - the dispatcher works meanwhile
            await asyncio.sleep(0.02)


async def test_a_slow_provider_delays_only_its_own_notifications(harness: Harness) -> None:
    async with webhook(hold=True) as slow, webhook() as fast:
        await harness.provider("slow", slow.url)
        await harness.provider("fast", fast.url)
        await harness.alert("to-slow", "slow", "slow-app")
        await harness.alert("to-fast", "fast", "fast-app")
        await harness.cached("Provider", "slow", "fast")
        await harness.cached("Alert", "to-slow", "to-fast")
        dispatcher = harness.dispatcher(concurrency=2, provider_concurrency=1)
        async with running(dispatcher):
            for i in range(6):
                assert dispatcher.submit(harness.event("slow-app", f"slow {i}"))
            await until(lambda: slow.in_flight > 0)
            assert dispatcher.submit(harness.event("fast-app", "fast 0"))
            # delivered while the slow Provider still holds its first notification
            await until(lambda: fast.received == ["fast 0"], within=10)
            assert slow.received == []
            assert slow.most_in_flight == 1  # its own limit
            slow.release.set()
            await until(lambda: len(slow.received) == 6)
        assert slow.received == [f"slow {i}" for i in range(6)]  # in order
        assert slow.most_in_flight == 1
        assert dispatcher.queued_bytes == 0
        assert not dispatcher._lanes  # idle lanes are let go


async def test_events_over_the_byte_budget_drop_the_oldest_and_are_counted(
        harness: Harness) -> None:
    async with webhook() as hook:
        await harness.provider("hook", hook.url)
        await harness.alert("all", "hook", "app")
        await harness.cached("Provider", "hook")
        await harness.cached("Alert", "all")
        registry = CollectorRegistry()
        dispatcher = harness.dispatcher(queue_bytes=1 << 20, registry=registry)
        body = "x" * 100_000
        for i in range(30):  # about 3 MB queued while nothing runs
            assert dispatcher.submit(harness.event("app", f"{i:02d} {body}"))
            assert dispatcher.queued_bytes <= 1 << 20
        dropped = registry.get_sample_value("fluxd_notification_events_dropped_total",
                                            {"reason": "queue_bytes"})
        assert dropped is not None and 20 <= dropped < 30
        kept = 30 - int(dropped)
        async with running(dispatcher):
            await until(lambda: len(hook.received) == kept)
            await until(lambda: dispatcher.queued_bytes == 0)
        # the newest were kept, and sent in order
        assert [m[:2] for m in hook.received] == [f"{i:02d}" for i in range(30 - kept, 30)]
        assert not dispatcher._lanes
        assert registry.get_sample_value("fluxd_notification_events_dropped_total",
                                         {"reason": "queue_full"}) == 0


async def test_events_over_the_queue_length_drop_the_oldest_and_are_counted(
        harness: Harness) -> None:
    registry = CollectorRegistry()
    dispatcher = harness.dispatcher(queue_size=5, registry=registry)
    for i in range(8):
        assert dispatcher.submit(harness.event("app", f"event {i}"))
    assert registry.get_sample_value("fluxd_notification_events_dropped_total",
                                     {"reason": "queue_full"}) == 3
    assert list(dispatcher._unmatched) == [4, 5, 6, 7, 8]  # arrival numbers: the newest


async def test_long_messages_against_an_inclusion_pattern_do_not_stall_the_loop(
        harness: Harness) -> None:
    # issue #10, finding 4: Flux's documented `.*succeeded.*` and messages of 60-150 KB
    # blocked the event loop for seconds each with Python's re
    async with webhook() as hook:
        await harness.provider("hook", hook.url)
        await harness.alert("succeeded", "hook", "app", inclusionList=[".*succeeded.*"])
        await harness.cached("Provider", "hook")
        await harness.cached("Alert", "succeeded")
        dispatcher = harness.dispatcher()
        started = time.perf_counter()
        async with running(dispatcher), loopback.loop_stalls() as stalls:
            for i in range(10):
                message = f"{i} " + "x" * (60_000 + 10_000 * i)
                if i % 3 == 0:
                    message += " upgrade succeeded"
                assert dispatcher.submit(harness.event("app", message))
            await until(lambda: len(hook.received) == 4 and dispatcher.queued_bytes == 0)
        assert sorted(m.split()[0] for m in hook.received) == ["0", "3", "6", "9"]
        assert max(stalls) < 0.5, f"the event loop stalled {max(stalls):.2f}s"
        assert time.perf_counter() - started < 10


async def test_an_inclusion_pattern_go_refuses_is_a_warning_on_the_alert(
        harness: Harness) -> None:
    async with webhook() as hook:
        await harness.provider("hook", hook.url)
        await harness.alert("lookahead", "hook", "app", inclusionList=["(?=succeeded)"])
        await harness.alert("plain", "hook", "app", inclusionList=["succeeded$"])
        await harness.cached("Provider", "hook")
        await harness.cached("Alert", "lookahead", "plain")
        dispatcher = harness.dispatcher()
        async with running(dispatcher):
            assert dispatcher.submit(harness.event("app", "upgrade succeeded"))
            assert dispatcher.submit(harness.event("app", "install succeeded\n"))

            async def warnings() -> list[dict[str, Any]]:
                events = await harness.client.list_all("v1", "Event", harness.namespace)
                return [e for e in events.items if e.get("reason") == "InvalidConfig"]

            async with asyncio.timeout(15):
                while not await warnings():  # noqa: ASYNC110 - polling the API server
                    await asyncio.sleep(0.1)
            await until(lambda: dispatcher.queued_bytes == 0)
            await asyncio.sleep(0.2)
        warning = (await warnings())[0]
        assert warning["involvedObject"]["name"] == "lookahead"
        assert warning["type"] == "Warning"
        assert "failed to compile inclusion regex: (?=succeeded)" in warning["message"]
        # only `plain` sent, and only the message ending the text (Go's $)
        assert hook.received == ["upgrade succeeded"]
