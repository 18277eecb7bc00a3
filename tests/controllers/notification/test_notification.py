"""Events end to end: controllers' events over the in-process bus, Alert matching and a
Provider (a loopback webhook standing in for the real service); the HTTP intake."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.controllers.conftest import Flux, condition
from tests.support.gitserver import GitServer

pytestmark = pytest.mark.anyio

SOURCE_API = "source.toolkit.fluxcd.io/v1"
KS_API = "kustomize.toolkit.fluxcd.io/v1"
NOTIFY_API = "notification.toolkit.fluxcd.io/v1beta3"


@dataclass
class Hook:
    """A webhook endpoint that records what it gets and answers as told."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    #: statuses to answer, in order; 200 once they run out
    answers: list[int] = field(default_factory=list)
    hang: bool = False
    got: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    state = Hook()

    async def receive(request: web.Request) -> web.Response:
        if state.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.release.wait(), 60)
        state.received.append(json.loads(await request.read()))
        state.headers.append(dict(request.headers))
        state.got.set()
        return web.Response(status=state.answers.pop(0) if state.answers else 200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


def configmap(name: str, namespace: str, **data: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": namespace}, "data": data})


async def setup_app(flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create({"apiVersion": SOURCE_API, "kind": "GitRepository",
                              "metadata": {"name": "repo", "namespace": namespace},
                              "spec": {"interval": "10m", "url": server.repo_url("app"),
                                       "ref": {"branch": "main"}}})
    await flux.client.create({"apiVersion": KS_API, "kind": "Kustomization",
                              "metadata": {"name": "app", "namespace": namespace},
                              "spec": {"interval": "10m", "prune": True,
                                       "sourceRef": {"kind": "GitRepository",
                                                     "name": "repo"}}})


async def provider_and_alert(flux: Flux, namespace: str, url: str, *,
                             send_timeout: str = "15s", **alert_spec: Any) -> None:
    await flux.client.create({"apiVersion": NOTIFY_API, "kind": "Provider",
                              "metadata": {"name": "hook", "namespace": namespace},
                              "spec": {"type": "generic", "address": url,
                                       "timeout": send_timeout}})
    await flux.client.create({"apiVersion": NOTIFY_API, "kind": "Alert",
                              "metadata": {"name": "all", "namespace": namespace},
                              "spec": {"providerRef": {"name": "hook"},
                                       "eventSources": [{"kind": "Kustomization",
                                                         "name": "*"}],
                                       **alert_spec}})
    # the Alert must be in the cache before the first event
    async with asyncio.timeout(10):
        alerts = flux.context.cache.informer(NOTIFY_API, "Alert")
        while alerts.get(namespace, "all") is None:  # noqa: ASYNC110 - the informer fills it
            await asyncio.sleep(0.05)


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def test_a_kustomization_s_events_reach_the_provider_with_merged_metadata(
        flux: Flux, server: GitServer, namespace: str, hook: Hook) -> None:
    await provider_and_alert(flux, namespace, hook.url, summary="eu-west",
                             eventMetadata={"env": "prod"})
    await setup_app(flux, server, namespace)
    await flux.wait(KS_API, "Kustomization", "app", namespace, ready)
    async with asyncio.timeout(10):
        while not any(e["reason"] == "ReconciliationSucceeded" for e in hook.received):
            hook.got.clear()
            await hook.got.wait()
    finished = next(e for e in hook.received if e["reason"] == "ReconciliationSucceeded")
    assert finished["involvedObject"]["kind"] == "Kustomization"
    assert finished["involvedObject"]["name"] == "app"
    assert finished["severity"] == "info"
    assert finished["reportingController"] == "kustomize-controller"
    assert finished["metadata"]["summary"] == "eu-west"
    assert finished["metadata"]["env"] == "prod"
    assert finished["metadata"]["revision"].startswith("main@sha1:")
    assert hook.headers[0]["Gotk-Component"] == "kustomize-controller"
    # the change set event went too
    assert any("ConfigMap/" in e["message"] and "created" in e["message"]
               for e in hook.received)


async def test_an_excluded_message_is_not_sent(
        flux: Flux, server: GitServer, namespace: str, hook: Hook) -> None:
    await provider_and_alert(flux, namespace, hook.url, exclusionList=["created"],
                             inclusionList=["Reconciliation finished", "created"])
    await setup_app(flux, server, namespace)
    await flux.wait(KS_API, "Kustomization", "app", namespace, ready)
    async with asyncio.timeout(10):
        while not hook.received:
            await hook.got.wait()
    await asyncio.sleep(0.5)
    assert [e["reason"] for e in hook.received] == ["ReconciliationSucceeded"]


async def test_a_failing_provider_is_retried_then_succeeds(
        flux: Flux, server: GitServer, namespace: str, hook: Hook) -> None:
    hook.answers = [500]
    await provider_and_alert(flux, namespace, hook.url,
                             inclusionList=["Reconciliation finished"])
    await setup_app(flux, server, namespace)
    async with asyncio.timeout(15):
        while len(hook.received) < 2:
            hook.got.clear()
            await hook.got.wait()
    assert hook.received[0] == hook.received[1]  # the same notification, sent again


async def test_a_hanging_provider_times_out_and_reconciles_go_on(
        flux: Flux, server: GitServer, namespace: str, hook: Hook) -> None:
    hook.hang = True
    await provider_and_alert(flux, namespace, hook.url, send_timeout="1s")
    started = time.monotonic()
    await setup_app(flux, server, namespace)
    await flux.wait(KS_API, "Kustomization", "app", namespace, ready, within=15)
    assert time.monotonic() - started < 10


async def test_a_rejected_notification_is_a_warning_event_on_the_alert(
        flux: Flux, server: GitServer, namespace: str, hook: Hook) -> None:
    hook.answers = [400] * 10
    await provider_and_alert(flux, namespace, hook.url,
                             inclusionList=["Reconciliation finished"])
    await setup_app(flux, server, namespace)

    async def warned() -> bool:
        events = await flux.client.list_all("v1", "Event", namespace)
        return any(e.get("reason") == "NotificationDispatchFailed"
                   and e["involvedObject"]["kind"] == "Alert"
                   and "Kustomization/" in e.get("message", "") for e in events.items)

    async with asyncio.timeout(15):
        while not await warned():  # noqa: ASYNC110 - polling the API server
            await asyncio.sleep(0.2)
    assert len(hook.received) == 1  # a 400 is not retried


async def test_the_intake_takes_flux_events_and_refuses_duplicates_and_junk(
        flux: Flux, namespace: str, hook: Hook) -> None:
    await provider_and_alert(flux, namespace, hook.url)
    address = flux.listeners.get("event intake")
    assert address is not None, "the intake says where it listens"
    body = {"involvedObject": {"kind": "Kustomization", "name": "external",
                               "namespace": namespace,
                               "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
            "severity": "error", "timestamp": "2026-01-01T00:00:00Z",
            "message": "health check failed", "reason": "HealthCheckFailed",
            "reportingController": "kustomize-controller",
            "metadata": {"kustomize.toolkit.fluxcd.io/revision": "main@sha1:abc",
                         "kustomize.toolkit.fluxcd.io/checksum": "dropped"}}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{address}/", json=body) as resp:
            assert resp.status == 202
        async with session.post(f"{address}/", json=body) as resp:
            assert resp.status == 429
        async with session.post(f"{address}/", data=b"{not json") as resp:
            assert resp.status == 400
        async with session.post(f"{address}/", data=io.BytesIO(b"x" * (3 << 20 | 1))) as resp:
            assert resp.status == 413
    async with asyncio.timeout(10):
        while not hook.received:
            await hook.got.wait()
    assert hook.received[0]["message"] == "health check failed"
    assert hook.received[0]["metadata"] == {"revision": "main@sha1:abc"}
