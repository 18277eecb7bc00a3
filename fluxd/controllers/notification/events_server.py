"""Flux's event intake: ``POST /`` with an event as Flux controllers send it.

For controllers outside this process (fluxd's own events come over the in-process bus).
Answers as Flux's notification-controller does: 202 once the event is taken (whether or
not an Alert matches), 429 for a duplicate within the rate-limit window, 400 for a body
that is not an event, 413 over 3 MiB (announced or streamed), 405 for another method.

The body is read whole by a ``BodyReader`` (``body.py``), so an event may arrive in any
number of segments or chunks; beyond Flux, 408 for a body slower than 30 s and 503 when
the bodies in flight would go past ``[notification] events_max_inflight_bytes``.

"Not an event" includes what no Provider could send on: JSON nested too deeply to
decode, a string with a lone surrogate escape (``"\\ud800"``, which has no UTF-8 form),
a timestamp that cannot be expressed in UTC.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from fluxd.clock import Clock
from fluxd.config import Settings
from fluxd.controllers.notification.body import BodyReader, RequestRejected
from fluxd.runtime.events import Event

log = logging.getLogger("fluxd.notification.events")

MAX_BODY = 3 << 20


class EventSink(Protocol):
    """Where the intake hands events (the dispatcher)."""

    def submit(self, event: Event) -> bool: ...


def parse_event(body: bytes) -> Event:
    """The event ``body`` holds; ``ValueError`` saying why it is none."""
    try:
        event = Event.from_json(json.loads(body))
        # what Providers will send: every string must have a UTF-8 form
        json.dumps(event.to_json(), ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise ValueError("invalid event: nested too deeply") from None
    except OverflowError as exc:
        raise ValueError(f"invalid event: {exc}") from None
    return event


class EventIntake:
    """The intake of one process; ``app()`` is its aiohttp application, ``registry`` gets
    the gauge of body bytes held."""

    def __init__(self, dispatcher: EventSink, *, clock: Clock, settings: Settings,
                 registry: CollectorRegistry | None = None) -> None:
        self.dispatcher = dispatcher
        gauge = Gauge("fluxd_event_intake_request_body_bytes_inflight",
                      "Bytes of event intake request bodies held in memory.",
                      registry=registry) if registry is not None else None
        self.bodies = BodyReader(max_size=MAX_BODY,
                                 max_inflight=settings.notification.events_max_inflight_bytes,
                                 clock=clock, gauge=gauge)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY + 1)
        app.router.add_post("/", self.receive)
        return app

    async def receive(self, request: web.Request) -> web.Response:
        try:
            async with self.bodies.read(request) as body:
                event = parse_event(body)
        except RequestRejected as exc:
            log.info("refused event: %s", exc)
            response = web.Response(status=exc.status, text=exc.answer + "\n")
            # close the connection rather than drain (and wait for) the rest of the body
            response.force_close()
            return response
        except ValueError as exc:
            log.info("rejected event: %s", exc)
            return web.Response(status=400, text="invalid event\n")
        if not self.dispatcher.submit(event):
            return web.Response(status=429, text="duplicate event\n")
        return web.Response(status=202)
