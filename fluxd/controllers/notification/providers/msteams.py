"""Type ``msteams``: a card for Microsoft Teams, POSTed to the Provider's address.

Which card depends on the address, as in Flux: a host ending in ``.webhook.office.com``
is a (deprecated) Office 365 connector and gets a ``MessageCard`` (theme colour
``0076D7``, ``FF0000`` for errors; the message as title, ``kind/name.namespace`` as
subtitle and summary, the metadata as facts). Any other address, such as a Teams
Workflows (Power Automate) webhook, gets an Adaptive Card 1.4 message: the object in
large bold text, the message (colour ``attention`` for errors), and a fact set with the
``summary`` metadata first and the other keys sorted.
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

#: The highest Adaptive Card schema version Teams renders.
ADAPTIVE_CARD_VERSION = "1.4"
CONNECTOR_HOST_SUFFIX = ".webhook.office.com"


def connector_card(event: Event) -> dict[str, Any]:
    label = object_label(event)
    return {
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": "FF0000" if is_error(event) else "0076D7",
        "summary": label,
        "sections": [{
            "activityTitle": event.message,
            "activitySubtitle": label,
            "facts": [{"name": key, "value": value} for key, value in sorted_metadata(event)],
        }],
    }


def adaptive_card(event: Event) -> dict[str, Any]:
    facts = [{"title": key, "value": value} for key, value in sorted_metadata(event)
             if key != "summary"]
    if "summary" in event.metadata:
        facts.insert(0, {"title": "summary", "value": event.metadata["summary"]})
    message: dict[str, Any] = {"type": "TextBlock", "text": event.message, "wrap": True}
    if is_error(event):
        message["color"] = "attention"
    fact_set: dict[str, Any] = {"type": "FactSet"}
    if facts:
        fact_set["facts"] = facts
    return {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": ADAPTIVE_CARD_VERSION,
                "body": [{
                    "type": "Container",
                    "items": [
                        {"type": "TextBlock", "text": object_label(event), "size": "large",
                         "weight": "bolder", "wrap": True},
                        _without_empty_text(message),
                        fact_set,
                    ],
                }],
                "msteams": {"width": "Full"},
            },
        }],
    }


def _without_empty_text(block: dict[str, Any]) -> dict[str, Any]:
    # Flux omits empty text fields from the card
    return {k: v for k, v in block.items() if not (k == "text" and v == "")}


class MSTeams:
    def __init__(self, url: str, *, connector: bool) -> None:
        self._url = url
        self.connector = connector

    async def post(self, event: Event, client: HTTPClient) -> None:
        body = connector_card(event) if self.connector else adaptive_card(event)
        await send(client, "POST", self._url, json_body=body)


def notifier(settings: ProviderSettings) -> Notifier:
    url = http_url(settings.address, "MS Teams webhook")
    host = url.hostname or ""
    return MSTeams(settings.address.strip(), connector=host.endswith(CONNECTOR_HOST_SUFFIX))
