"""Flux's event intake: ``POST /`` with an event as Flux controllers send it.

For controllers outside this process (fluxd's own events come over the in-process bus).
Answers as Flux's notification-controller does: 202 once the event is taken (whether or
not an Alert matches), 429 for a duplicate within the rate-limit window, 400 for a body
that is not an event, 413 over 3 MiB, 405 for another method.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from fluxd.controllers.notification.dispatch import Dispatcher
from fluxd.runtime.events import Event

log = logging.getLogger("fluxd.notification.events")

MAX_BODY = 3 << 20


def create_app(dispatcher: Dispatcher) -> web.Application:
    def too_large() -> web.Response:
        # close the connection rather than drain (and wait for) the rest of the body
        response = web.Response(status=413, text="request body too large\n")
        response.force_close()
        return response

    async def receive(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return too_large()
        try:
            body = await request.content.read(MAX_BODY + 1)
        except (OSError, ValueError):
            return web.Response(status=400, text="unreadable body\n")
        if len(body) > MAX_BODY:
            return too_large()
        try:
            event = Event.from_json(json.loads(body))
        except ValueError as exc:
            log.info("rejected event: %s", exc)
            return web.Response(status=400, text="invalid event\n")
        if not dispatcher.submit(event):
            return web.Response(status=429, text="duplicate event\n")
        return web.Response(status=202)

    app = web.Application(client_max_size=MAX_BODY + 1)
    app.router.add_post("/", receive)
    return app
