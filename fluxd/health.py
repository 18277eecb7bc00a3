"""The one HTTP listener for probes and metrics: ``/metrics``, ``/healthz``, ``/readyz``.

Contract:

* ``/metrics`` renders the given registry in the format the scraper asks for with
  ``Accept`` (OpenMetrics 1.0, else Prometheus text 0.0.4, as prometheus_client
  negotiates). ``*_created`` samples are left out: the Go controllers do not expose them.
  Collection runs on the event loop, so scrape-time collectors may read loop state.
* ``/healthz`` answers 200 ``ok`` while the process serves HTTP at all.
* ``/readyz`` answers 200 only when ``ready()`` returns ``(True, reason)``; otherwise 503
  with the reason (or the exception ``ready()`` raised).
* :func:`serve` owns the listener: entering binds (``port`` 0 picks a free one, reported in
  :attr:`HealthServer.port`), leaving closes it. Signals belong to the daemon, not here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from fluxd.listen import Listener, parse_address, serve_app

__all__ = ["HealthServer", "Readiness", "create_app", "parse_address", "serve"]

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


def create_app(*, registry: CollectorRegistry, ready: Readiness) -> web.Application:
    """The aiohttp application serving the three endpoints."""
    view = _WithoutCreated(registry)

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encode(view)
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

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


#: where the server is bound
HealthServer = Listener


@asynccontextmanager
async def serve(address: str, *, registry: CollectorRegistry,
                ready: Readiness) -> AsyncIterator[HealthServer]:
    """Serve the endpoints on ``address`` for the duration of the ``async with`` block.

    With an empty host (``:0``) every interface is bound; with port 0 each socket may get
    its own port, and the first one is reported.
    """
    async with serve_app(address, create_app(registry=registry, ready=ready),
                         what="health and metrics server", log=log) as server:
        yield server
