"""Small loopback helpers for tests: an aiohttp application served on a free port, and
a watch on the event loop's stalls while a block runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on 127.0.0.1 and a free port until the block ends; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def loop_stalls(tick: float = 0.005) -> AsyncIterator[list[float]]:
    """How late a ``tick``-second timer woke, each time, while the block runs: the
    event loop's stalls (the list fills as the block runs)."""
    loop = asyncio.get_running_loop()
    stalls: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(tick)
            stalls.append(loop.time() - last - tick)
            last = loop.time()

    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(ticker(), name="loop stall watch")
        try:
            yield stalls
        finally:
            watcher.cancel()
