"""Listener addresses as fluxd's flags take them, where a listener ended up bound, and
serving an aiohttp application on one for the length of an ``async with`` block."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web


def parse_address(address: str) -> tuple[str | None, int]:
    """``host:port`` as Go's listeners take it: ``:8080`` (all interfaces), ``[::1]:0``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port)


@dataclass(frozen=True)
class Listener:
    """A running HTTP listener: where it is bound (port 0 resolved)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve_app(address: str, app: web.Application, *, what: str,
                    log: logging.Logger, lingering_time: float = 10.0
                    ) -> AsyncIterator[Listener]:
    """Serve ``app`` on ``address`` until the block ends; logs ``<what> listening``.

    With an empty host (``:0``) every interface is bound; with port 0 each socket may get
    its own port, and the first one is reported. Signals belong to the daemon, not here.
    ``lingering_time`` is how long an unread request body is drained after the answer
    (aiohttp's default 10 s); 0 closes the connection at once, for listeners that refuse
    oversized bodies from strangers.
    """
    host, port = parse_address(address)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0,
                           lingering_time=lingering_time)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        server = Listener(host=str(bound_host), port=int(bound_port))
        log.info("%s listening", what, extra={"address": server.url})
        yield server
    finally:
        await runner.cleanup()
