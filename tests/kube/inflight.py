"""A dev cluster whose in-flight limit a test can fill: a write the server has begun
(headers read, slot taken) whose body never comes holds one mutating slot until the
test lets it go."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import yaml

from fluxd.devcluster.server import DevServer
from tests.conftest import ServerThread


def dev_server(thread: ServerThread) -> DevServer:
    assert thread.dev is not None
    return thread.dev.server


async def until(check: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Wait for the server thread to get somewhere (it runs on a loop of its own)."""
    try:
        async with asyncio.timeout(within):
            while True:
                if check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"waited {within} s for {what}") from None


def _read(kubeconfig: Path) -> Any:
    return yaml.safe_load(kubeconfig.read_text())


@contextlib.asynccontextmanager
async def write_in_flight(thread: ServerThread, kubeconfig: Path, path: str, *,
                          user: str | None = None) -> AsyncIterator[None]:
    """A POST to ``path`` (as ``user`` when given) that holds a mutating slot while the
    block runs: its body is announced and never sent."""
    config = _read(kubeconfig)
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    url = urllib.parse.urlsplit(cluster["server"])
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    server = dev_server(thread)
    before = server.inflight[True]
    _, writer = await asyncio.open_connection(url.hostname, url.port, ssl=context)
    head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", f"Authorization: Bearer {token}",
            "Content-Type: application/json", "Content-Length: 1000"]
    if user:
        head.append(f"Impersonate-User: {user}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    try:
        await writer.drain()
        await until(lambda: server.inflight[True] > before, "the write to take a slot")
        yield
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        await until(lambda: server.inflight[True] <= before, "the slot to be given back")
