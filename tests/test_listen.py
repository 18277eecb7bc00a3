"""fluxd.listen: every listener bounded against slow and hostile clients, over real
loopback sockets — the connection cap, the header deadline, the idle timeout, and log
lines a stranger cannot multiply."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fluxd import listen
from fluxd.clock import FakeClock
from fluxd.config import HTTPSettings
from fluxd.listen import Listener, ListenerLimits, serve_app
from tests.support.rawhttp import Connection

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("fluxd.test.listener")


def app() -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug in a handler")

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/broken", broken)
    return application


def serve(clock: FakeClock, **limits: Any) -> AbstractAsyncContextManager[Listener]:
    return serve_app("127.0.0.1:0", app(), what="test listener", log=log,
                     limits=ListenerLimits(**limits), clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def connect(listener: Listener) -> Connection:
    return await Connection.open(listener.url)


async def read_response(stream: Connection) -> tuple[int, bytes]:
    """One response (status, body) off a kept-alive connection."""
    answer = await stream.response(within=5)
    return answer.status, answer.body


async def status_of(listener: Listener, path: str = "/healthz") -> int:
    """The status of one request on a connection of its own."""
    stream = await connect(listener)
    try:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                          .encode())
        line = await asyncio.wait_for(stream.reader.readline(), 5)
        return int(line.split()[1])
    finally:
        await stream.close()


async def closed_by_server(stream: Connection, within: float = 5.0) -> bytes:
    """What the server sent before closing the connection (fails if it does not close)."""
    try:
        return await asyncio.wait_for(stream.reader.read(), within)
    except ConnectionResetError:
        return b""


async def still_open(stream: Connection) -> bool:
    try:
        await asyncio.wait_for(stream.reader.read(1), 0.2)
    except TimeoutError:
        return True
    return False


async def settle() -> None:
    """Let the tasks woken by the fake clock run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def until(check: Callable[[], Any], what: str) -> None:
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within 4s: {what}")


# -- the connection cap ------------------------------------------------------------------


async def test_connections_past_the_cap_are_refused_and_every_listener_still_answers(
        clock: FakeClock) -> None:
    async with serve(clock, max_connections=8) as capped, serve(clock) as other:
        idle = [await connect(capped) for _ in range(8)]
        extra = [await connect(capped) for _ in range(4)]
        for stream in extra:
            answer = await closed_by_server(stream)
            assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(
                b"too many connections\n")
        assert all([await still_open(stream) for stream in idle])
        assert await status_of(other) == 200
        assert await status_of(capped) == 503
        await idle.pop().close()

        async def answers() -> bool:
            return await status_of(capped) == 200

        await until(answers, "the freed slot is taken again")
        for stream in idle + extra:
            await stream.close()


def test_a_listener_takes_at_most_an_eighth_of_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert listen.connection_cap(10**9) == soft // listen.DESCRIPTOR_SHARE
    assert listen.connection_cap(3) == 3


def test_the_default_limits_are_the_http_settings_defaults() -> None:
    settings = HTTPSettings()
    configured = ListenerLimits(max_connections=settings.max_connections,
                                read_header_timeout=settings.read_header_timeout,
                                idle_timeout=settings.idle_timeout)
    assert configured == listen.DEFAULT_LIMITS


# -- the header deadline -----------------------------------------------------------------


async def test_a_client_dripping_its_headers_is_disconnected_after_the_header_timeout(
        clock: FakeClock) -> None:
    async with serve(clock, read_header_timeout=10) as listener:
        dripping = await connect(listener)
        punctual = await connect(listener)
        for step in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-Drip: 1\r\n"):
            for stream in (dripping, punctual):
                await stream.send(step)
            clock.advance(3)
            await settle()
        assert await still_open(dripping)
        await punctual.send(b"\r\n")  # its headers complete 9 s after connecting
        assert await read_response(punctual) == (200, b"ok")
        clock.advance(2)
        await settle()
        assert await closed_by_server(dripping) == b""
        assert await still_open(punctual), "a kept-alive connection is not a late one"
        for stream in (dripping, punctual):
            await stream.close()


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
        clock: FakeClock) -> None:
    async with serve(clock, read_header_timeout=10) as listener:
        silent = await connect(listener)
        await settle()
        clock.advance(9)
        await settle()
        assert await still_open(silent)
        clock.advance(1)
        await settle()
        assert await closed_by_server(silent) == b""
        await silent.close()


async def test_the_next_request_on_a_kept_alive_connection_has_its_own_header_deadline(
        clock: FakeClock) -> None:
    async with serve(clock, read_header_timeout=10) as listener:
        stream = await connect(listener)
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await read_response(stream) == (200, b"ok")
        clock.advance(30)  # idle between requests: the idle timeout's business, not this
        await settle()
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await read_response(stream) == (200, b"ok")
        await stream.send(b"GET /heal")  # the next one starts, and stalls
        await settle()
        clock.advance(10)
        await settle()
        assert await closed_by_server(stream) == b""
        await stream.close()


# -- the idle timeout --------------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
        clock: FakeClock) -> None:
    # aiohttp's own keep-alive timer: it runs on the loop's time, so this one waits
    async with serve(clock, idle_timeout=0.3) as listener:
        stream = await connect(listener)
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await read_response(stream) == (200, b"ok")
        answered = time.monotonic()
        assert await closed_by_server(stream) == b""
        assert 0.25 <= time.monotonic() - answered < 4
        await stream.close()


# -- log lines ---------------------------------------------------------------------------

MALFORMED = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long\x01: " + b"A" * 8000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
]


async def test_malformed_requests_are_answered_400_and_logged_as_a_few_short_lines(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serve(clock) as listener:
        for i in range(200):
            stream = await connect(listener)
            await stream.send(MALFORMED[i % len(MALFORMED)])
            answer = await closed_by_server(stream)
            assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.0 400 ")
            await stream.close()
        clock.advance(listen.LOG_INTERVAL)
        await settle()
    records = [r for r in caplog.records if r.name in ("aiohttp.server", log.name)]
    assert all(r.name == log.name for r in records), "aiohttp's own lines were let through"
    lines = [r for r in records if "listening" not in r.getMessage()]
    assert len(lines) == listen.LOG_BURST + 1
    assert all(r.exc_info is None and len(r.getMessage()) < 200 for r in lines)
    assert all(len(str(getattr(r, "fluxd_fields", {}))) < 400 for r in lines)
    assert lines[-1].getMessage() == (
        f"{200 - listen.LOG_BURST} more bad requests not logged in 10s")


async def test_a_handler_exception_keeps_its_stack_trace_under_the_same_limit(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with serve(clock) as listener:
        for _ in range(20):
            assert await status_of(listener, "/broken") == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == listen.LOG_BURST
    assert all(r.name == log.name and r.exc_info is not None for r in errors)


def accept_report(sock: socket.socket) -> dict[str, Any]:
    """The context asyncio's accept loop passes to the loop's exception handler."""
    from asyncio import trsock

    return {"message": "socket.accept() out of system resource",
            "exception": OSError(errno.EMFILE, "Too many open files"),
            "socket": trsock.TransportSocket(sock)}


async def test_the_accept_error_filter_logs_once_per_interval_and_passes_the_rest_on(
        clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    passed: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: passed.append(context))
    try:
        with listen.throttle_accept_errors(loop, clock=clock) as handler, \
                socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            assert loop.get_exception_handler() is handler
            for _ in range(100):
                loop.call_exception_handler(accept_report(sock))
            clock.advance(listen.LOG_INTERVAL)
            loop.call_exception_handler(accept_report(sock))
            loop.call_exception_handler({"message": "something else"})
        assert loop.get_exception_handler() is not handler
    finally:
        loop.set_exception_handler(before)
    lines = [r for r in caplog.records if r.name == "fluxd.listen"]
    assert len(lines) == 2
    assert all(r.exc_info is None for r in lines)
    assert getattr(lines[1], "fluxd_fields", {})["suppressed"] == 99
    assert passed == [{"message": "something else"}]


CHILD = textwrap.dedent("""
    import asyncio, logging, os, resource, sys
    from aiohttp import web
    from fluxd import listen, logging as fluxlog
    from fluxd.clock import SystemClock

    async def main() -> None:
        fluxlog.setup("info", "json")
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
        loop = asyncio.get_running_loop()
        with listen.throttle_accept_errors(loop, clock=SystemClock()):
            async with listen.serve_app("127.0.0.1:0", web.Application(), what="probe",
                                        log=logging.getLogger("probe")) as server:
                taken = []
                try:
                    while True:  # every descriptor left, as git and watches might
                        taken.append(os.open(os.devnull, os.O_RDONLY))
                except OSError:
                    pass
                print(server.port, flush=True)
                await asyncio.sleep(1.5)
                for fd in taken:
                    os.close(fd)

    asyncio.run(main())
""")


def test_accept_errors_past_the_descriptor_limit_are_logged_once_per_interval() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5)
                   for _ in range(20)]
        _, err = child.communicate(timeout=30)
        for client in clients:
            client.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    lines = [json.loads(line) for line in err.decode().splitlines()]
    assert lines[0]["msg"] == "probe listening" and lines[0]["maxConnections"] == 128 // 8
    accept = [line for line in lines[1:] if "accept" in line["msg"]]
    assert len(accept) == 1, f"{len(accept)} accept lines"
    assert "Too many open files" in accept[0]["error"] and "stacktrace" not in accept[0]
    assert child.returncode == 0, err.decode()[-2000:]


async def test_an_exception_inside_the_block_reaches_the_caller_unwrapped(
        clock: FakeClock) -> None:
    with pytest.raises(KeyError):
        async with serve(clock):
            raise KeyError("mine")


async def test_a_served_listener_answers_and_closes_when_the_block_ends(
        clock: FakeClock) -> None:
    async with serve(clock) as listener:
        assert await status_of(listener) == 200
    with pytest.raises(OSError):
        await connect(listener)
