"""The one HTTP listener for probes and metrics: ``/metrics``, ``/healthz``, ``/readyz``.

Contract:

* ``/metrics`` renders the given registry in the format the scraper asks for with
  ``Accept`` (OpenMetrics 1.0, else Prometheus text 0.0.4, as prometheus_client
  negotiates). ``*_created`` samples are left out: the Go controllers do not expose them.
  Collection runs on the event loop, so scrape-time collectors may read loop state;
  encoding, the larger part of the work, runs in a worker thread of the server's own.
  A body is reused for ``RENDER_TTL`` seconds of the injected clock, per content type,
  and scrapes arriving while one is rendered wait for that one: a crowd of scrapers costs
  one collection a second, and ``/readyz`` keeps answering at once meanwhile.
* ``/healthz`` answers 200 ``ok`` while the process serves HTTP at all.
* ``/readyz`` answers 200 only when ``ready()`` returns ``(True, reason)``; otherwise 503
  with the reason (or the exception ``ready()`` raised).
* :func:`serve` owns the listener: entering binds (``port`` 0 picks a free one, reported in
  :attr:`HealthServer.port`), leaving closes it. Signals belong to the daemon, not here.
  The listener is bounded as every listener is (:mod:`fluxd.listen`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from fluxd.clock import Clock, SystemClock
from fluxd.listen import DEFAULT_LIMITS, Limits, Listener, parse_address, serve_app
from fluxd.lru import LRU

__all__ = ["RENDER_TTL", "HealthServer", "Readiness", "create_app", "parse_address", "serve"]

log = logging.getLogger("fluxd.health")

#: Returns (ready, reason); the reason is shown on /readyz either way.
Readiness = Callable[[], tuple[bool, str]]

_CREATED_TYPES = frozenset({"counter", "histogram", "summary"})


class _WithoutCreated:
    """A registry view that drops prometheus_client's ``<name>_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            if family.type in _CREATED_TYPES:
                created = family.name + "_created"
                family.samples = [s for s in family.samples if s.name != created]
            yield family


#: seconds a rendered /metrics body is served again (Prometheus scrapes every 15 s or so)
RENDER_TTL = 1.0
#: content types whose body is kept: prometheus_client echoes the OpenMetrics version a
#: client asks for, so without a bound every new version string would add one
_KEPT_BODIES = 4


class _Collected:
    """Families collected once, handed to prometheus_client's encoders as a registry."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Exposition:
    """The ``/metrics`` bodies (see the module docstring): collected on the loop, encoded
    in one worker thread, kept ``RENDER_TTL`` per content type, one render at a time
    per content type however many scrapes wait for it."""

    def __init__(self, view: _WithoutCreated, clock: Clock) -> None:
        self._view = view
        self._clock = clock
        self._collected: tuple[float, _Collected] | None = None
        #: content type -> (when its families were collected, the body being encoded);
        #: the one rendered longest ago goes first
        self._bodies: LRU[str, tuple[float, asyncio.Future[bytes]]] = LRU(_KEPT_BODIES)
        # one thread: scrapes asking for many content types queue up rather than take
        # every core
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")

    async def body(self, encode: Callable[[_Collected], bytes], content_type: str) -> bytes:
        now = self._clock.monotonic()
        entry = self._bodies.peek(content_type)
        if entry is None or now - entry[0] >= RENDER_TTL:
            collected_at, families = self._collect(now)
            rendering = asyncio.get_running_loop().run_in_executor(
                self._worker, encode, families)
            rendering.add_done_callback(functools.partial(self._drop_failed, content_type))
            entry = (collected_at, rendering)
            self._bodies.put(content_type, entry)
        # shielded: a scraper that goes away does not cancel the others' render
        return await asyncio.shield(entry[1])

    def _collect(self, now: float) -> tuple[float, _Collected]:
        if self._collected is None or now - self._collected[0] >= RENDER_TTL:
            self._collected = (now, _Collected(list(self._view.collect())))
        return self._collected

    def _drop_failed(self, content_type: str, rendering: asyncio.Future[bytes]) -> None:
        if rendering.cancelled() or rendering.exception() is not None:
            entry = self._bodies.peek(content_type)
            if entry is not None and entry[1] is rendering:
                self._bodies.pop(content_type)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def create_app(*, registry: CollectorRegistry, ready: Readiness,
               clock: Clock | None = None) -> web.Application:
    """The aiohttp application serving the three endpoints; ``clock`` times how long a
    rendered ``/metrics`` body is reused."""
    exposition = _Exposition(_WithoutCreated(registry), clock or SystemClock())

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await exposition.body(encode, content_type)
        response = web.Response(body=body)
        # Set verbatim: aiohttp's content_type= rejects parameters such as version=.
        response.headers["Content-Type"] = content_type
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        try:
            ok, reason = ready()
        except Exception as exc:
            log.exception("readiness check failed")
            return web.Response(status=503, text=f"readiness check failed: {exc}")
        if ok:
            return web.Response(text=reason or "ok")
        return web.Response(status=503, text=reason or "not ready")

    async def close(app: web.Application) -> None:
        exposition.close()

    app = web.Application()
    app.on_cleanup.append(close)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


#: where the server is bound
HealthServer = Listener


@asynccontextmanager
async def serve(address: str, *, registry: CollectorRegistry, ready: Readiness,
                limits: Limits = DEFAULT_LIMITS,
                clock: Clock | None = None) -> AsyncIterator[HealthServer]:
    """Serve the endpoints on ``address`` for the duration of the ``async with`` block.

    With an empty host (``:0``) every interface is bound; with port 0 each socket may get
    its own port, and the first one is reported. ``limits`` bound the listener's
    connections (``[http]``).
    """
    async with serve_app(address, create_app(registry=registry, ready=ready, clock=clock),
                         what="health and metrics server", log=log, limits=limits,
                         clock=clock) as server:
        yield server
