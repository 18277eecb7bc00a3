"""The event intake under clients that split, stall, inflate or garble their bodies: the
intake served on loopback with a recording sink in place of the dispatcher, raw sockets
deciding how the bytes arrive; and the running daemon's intake for what only the real
dispatcher would have tripped over."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from fluxd import listen
from fluxd.clock import FakeClock
from fluxd.config import Settings
from fluxd.controllers.notification.events_server import MAX_BODY, EventIntake
from fluxd.runtime.events import Event
from tests.controllers.conftest import Flux
from tests.support.rawhttp import LAST_CHUNK, Connection, chunk, head

pytestmark = pytest.mark.anyio

log = logging.getLogger("tests.events_server")
JSON = {"Content-Type": "application/json"}


def event_body(message: str = "health check failed", **more: Any) -> bytes:
    return json.dumps({
        "involvedObject": {"kind": "Kustomization", "name": "external",
                           "namespace": "apps",
                           "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
        "severity": "error", "timestamp": "2026-01-01T00:00:00Z", "message": message,
        "reason": "HealthCheckFailed", "reportingController": "kustomize-controller",
        **more}).encode()


def sized_event(size: int) -> bytes:
    """An event whose JSON is exactly ``size`` bytes (a long message)."""
    bare = len(event_body(""))
    body = event_body("m" * (size - bare))
    assert len(body) == size
    return body


@dataclass
class Sink:
    """Takes every event, as a dispatcher with no duplicates would."""

    events: list[Event] = field(default_factory=list)

    def submit(self, event: Event) -> bool:
        self.events.append(event)
        return True


@dataclass
class Intake:
    url: str
    sink: Sink
    clock: FakeClock
    registry: CollectorRegistry
    max_inflight: int

    def held(self) -> float:
        value = self.registry.get_sample_value(
            "fluxd_event_intake_request_body_bytes_inflight")
        assert value is not None
        return value

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> int:
        async with aiohttp.ClientSession() as session, \
                session.post(self.url + "/", data=body, headers=headers or JSON) as resp:
            return resp.status


@asynccontextmanager
async def serving(*, max_inflight: int = 16 << 20) -> AsyncIterator[Intake]:
    clock = FakeClock()
    registry = CollectorRegistry()
    sink = Sink()
    settings = Settings.model_validate(
        {"notification": {"events_max_inflight_bytes": max_inflight}})
    intake = EventIntake(sink, clock=clock, settings=settings, registry=registry)
    async with listen.serve_app("127.0.0.1:0", intake.app(), what="event intake", log=log,
                                lingering_time=0) as listener:
        yield Intake(listener.url, sink, clock, registry, max_inflight)


async def until(check: Any, *, within: float = 10) -> None:
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within}s")


# --------------------------------------------------------------------------- whole bodies


async def test_an_event_sent_in_two_segments_with_a_pause_between_is_taken() -> None:
    body = sized_event(100_000)
    async with serving() as intake:
        conn = await Connection.open(intake.url)
        try:
            answer = await conn.send_until_answered(
                [head("/", headers=JSON, content_length=len(body)) + body[:50_000],
                 body[50_000:]], pause=0.3)
        finally:
            await conn.close()
        assert answer.status == 202
        assert intake.sink.events[0].message == "m" * (100_000 - len(event_body("")))


async def test_an_event_just_under_the_size_limit_is_taken() -> None:
    body = sized_event(MAX_BODY - 1)
    async with serving() as intake:
        conn = await Connection.open(intake.url)
        try:
            answer = await conn.send_until_answered(
                [head("/", headers=JSON, content_length=len(body)), body])
        finally:
            await conn.close()
        assert answer.status == 202
        assert len(intake.sink.events) == 1


async def test_a_chunked_body_over_the_size_limit_is_413_not_400() -> None:
    piece = b"x" * (64 << 10)
    parts = [head("/", headers=JSON, chunked=True)]
    parts += [chunk(piece)] * (MAX_BODY // len(piece) + 2)
    parts.append(LAST_CHUNK)
    async with serving() as intake:
        conn = await Connection.open(intake.url)
        try:
            answer = await conn.send_until_answered(parts)
        finally:
            await conn.close()
        assert answer.status == 413
        assert answer.headers.get("connection") == "close"
        await until(lambda: intake.held() == 0)
        assert not intake.sink.events


async def test_an_announced_body_over_the_size_limit_is_413_before_it_is_read() -> None:
    async with serving() as intake:
        conn = await Connection.open(intake.url)
        try:
            await conn.send(head("/", headers=JSON, content_length=MAX_BODY + 1))
            assert (await conn.response()).status == 413
        finally:
            await conn.close()


async def test_a_body_slower_than_the_deadline_is_408() -> None:
    body = event_body()
    async with serving() as intake:
        conn = await Connection.open(intake.url)
        try:
            await conn.send(head("/", headers=JSON, content_length=len(body)) + body[:10])
            await until(lambda: intake.held() == 10)
            intake.clock.advance(29)
            await asyncio.sleep(0.1)
            assert intake.held() == 10, "still waiting for the rest"
            intake.clock.advance(2)
            assert (await conn.response()).status == 408
        finally:
            await conn.close()
        await until(lambda: intake.held() == 0)


# --------------------------------------------------------------------------- client errors


async def test_deeply_nested_json_is_400() -> None:
    async with serving() as intake:
        assert await intake.post(b"[" * 100_000 + b"]" * 100_000) == 400
        nested_metadata = event_body()[:-1] + b', "metadata": {"a": ' + b"[" * 100_000 + \
            b"]" * 100_000 + b"}}"
        assert await intake.post(nested_metadata) == 400
        assert not intake.sink.events


async def test_a_lone_surrogate_in_an_event_is_400() -> None:
    async with serving() as intake:
        assert await intake.post(event_body("\ud800")) == 400
        assert await intake.post(event_body(metadata={"revision": "\udfff"})) == 400
        # a surrogate pair is a character like any other
        assert await intake.post(event_body("\ud83d\ude00")) == 202
        assert [e.message for e in intake.sink.events] == ["\U0001f600"]


async def test_a_timestamp_with_no_utc_form_is_400() -> None:
    async with serving() as intake:
        assert await intake.post(event_body(timestamp="0001-01-01T00:00:00+05:00")) == 400
        assert not intake.sink.events


async def test_a_body_that_is_not_its_content_encoding_is_400() -> None:
    async with serving() as intake:
        headers = {**JSON, "Content-Encoding": "gzip"}
        assert await intake.post(b"this is not gzip", headers) == 400
        assert await intake.post(gzip.compress(event_body()), headers) == 202


async def test_a_gzip_bomb_is_413() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    async with serving() as intake:
        headers = {**JSON, "Content-Encoding": "gzip"}
        assert await intake.post(bomb, headers) == 413
        await until(lambda: intake.held() == 0)


# --------------------------------------------------------------------------- the budget


async def test_event_bodies_in_flight_never_hold_more_than_the_budget() -> None:
    part = 200 << 10
    async with serving(max_inflight=1 << 20) as intake:
        stalled: list[Connection] = []
        try:
            # bodies announced at 256 KiB, stalled after 200 KiB: each is held
            while intake.held() + (256 << 10) <= intake.max_inflight:
                before = intake.held()
                conn = await Connection.open(intake.url)
                stalled.append(conn)
                await conn.send(head("/", headers=JSON, content_length=256 << 10) +
                                b"x" * part)
                await until(lambda before=before: intake.held() == before + part)
            assert len(stalled) >= 4
            # one that cannot fit is refused at once, nothing read
            for _ in range(3):
                conn = await Connection.open(intake.url)
                try:
                    await conn.send(head("/", headers=JSON, content_length=256 << 10))
                    answer = await conn.response(within=2)
                finally:
                    await conn.close()
                assert answer.status == 503
                assert answer.headers.get("connection") == "close"
            # one that does not say its length is refused when its bytes do not fit
            free = intake.max_inflight - intake.held()
            conn = await Connection.open(intake.url)
            try:
                answer = await conn.send_until_answered(
                    [head("/", headers=JSON, chunked=True),
                     *[chunk(b"y" * (16 << 10))] * (int(free) // (16 << 10) + 4)])
            finally:
                await conn.close()
            assert answer.status == 503
            assert intake.held() <= intake.max_inflight
        finally:
            for conn in stalled:
                await conn.close()
        # the stalled clients went away: their bytes are let go, and events come in again
        await until(lambda: intake.held() == 0)
        assert await intake.post(event_body()) == 202


# --------------------------------------------------------------------------- the daemon


async def test_the_running_intake_answers_garbled_events_400_not_500(flux: Flux) -> None:
    listeners = flux.listeners
    await until(lambda: "event intake" in listeners, within=30)
    address = listeners["event intake"]
    cases = [b"[" * 100_000 + b"]" * 100_000, event_body("\ud800"),
             event_body(metadata={"kustomize.toolkit.fluxcd.io/revision": "\udc80"})]
    async with aiohttp.ClientSession() as session:
        for body in cases:
            async with session.post(address + "/", data=body, headers=JSON) as resp:
                assert resp.status == 400, body[:60]
        async with session.post(address + "/", data=event_body(), headers=JSON) as resp:
            assert resp.status == 202
