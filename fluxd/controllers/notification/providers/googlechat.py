"""Type ``googlechat``: a (v1) card message, POSTed to a Google Chat space webhook.

The card header is ``kind/name.namespace`` over the reporting controller; one section
holds the message (in red ``<font>`` for errors), another the metadata as key-value
widgets. Unset fields are sent as ``null``, as Flux sends them.
"""

from __future__ import annotations

from typing import Any

from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import (
    http_url,
    is_error,
    object_label,
    send,
    sorted_metadata,
)
from fluxd.runtime.events import Event


def card(event: Event) -> dict[str, Any]:
    text = f'<font color="#ff0000">{event.message}</font>' if is_error(event) \
        else event.message
    sections: list[dict[str, Any]] = [
        {"header": "", "widgets": [{"textParagraph": {"text": text}, "keyValue": None}]},
    ]
    if event.metadata:
        sections.append({"header": "", "widgets": [
            {"textParagraph": None,
             "keyValue": {"topLabel": key, "content": value, "contentMultiline": False,
                          "bottomLabel": None, "icon": None}}
            for key, value in sorted_metadata(event)]})
    header = {"title": object_label(event), "subtitle": event.reporting_controller,
              "imageUrl": None, "imageStyle": None}
    return {"cards": [{"header": header, "sections": sections}]}


class GoogleChat:
    def __init__(self, url: str) -> None:
        self._url = url

    async def post(self, event: Event, client: HTTPClient) -> None:
        await send(client, "POST", self._url, json_body=card(event))


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Google Chat hook")
    return GoogleChat(settings.address.strip())
