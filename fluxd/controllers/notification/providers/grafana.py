"""Type ``grafana``: an annotation, POSTed to Grafana's annotations API.

The address is ``https://<grafana>/api/annotations``. The annotation (Graphite format):
``when`` is the event time in Unix seconds (as Flux sends it, although Grafana reads
milliseconds), ``text`` is ``kind/name.namespace``, and the tags are ``flux``, the
reporting controller, ``key: value`` per metadata entry (``:`` inside keys and values
becomes ``|``), then ``kind: …``, ``name: …`` and ``namespace: …``. Authentication: the
token as ``Authorization: Bearer``, else username and password as Basic.
"""

from __future__ import annotations

import base64
from typing import Any

from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import (
    http_url,
    object_label,
    send,
    sorted_metadata,
)
from fluxd.runtime.events import Event


def annotation(event: Event) -> dict[str, Any]:
    ref = event.involved_object
    tags = ["flux", event.reporting_controller]
    tags += [f"{key.replace(':', '|')}: {value.replace(':', '|')}"
             for key, value in sorted_metadata(event)]
    tags += [f"kind: {ref.kind}", f"name: {ref.name}", f"namespace: {ref.namespace}"]
    return {"when": int(event.timestamp.timestamp()), "text": object_label(event),
            "tags": tags}


class Grafana:
    def __init__(self, url: str, *, token: str, username: str, password: str) -> None:
        self._url = url
        self._headers: dict[str, str] = {}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif username and password:
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"

    async def post(self, event: Event, client: HTTPClient) -> None:
        await send(client, "POST", self._url, json_body=annotation(event),
                   headers=self._headers)


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Grafana")
    return Grafana(settings.address.strip(), token=settings.token, username=settings.username,
                   password=settings.password)
