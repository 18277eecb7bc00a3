"""Type ``opsgenie``: an alert, POSTed to Opsgenie's alert API.

The address is ``https://api.opsgenie.com/v2/alerts`` and the token (required) the API
key, sent as ``Authorization: GenieKey <token>``. The alert: ``message`` is
``Kind/name``, ``description`` the event message, ``details`` the metadata plus
``severity``.
"""

from __future__ import annotations

from typing import Any

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers.generic import http_url, send
from fluxd.runtime.events import Event


def alert(event: Event) -> dict[str, Any]:
    ref = event.involved_object
    details = {**event.metadata, "severity": event.severity}
    return {"message": f"{ref.kind}/{ref.name}", "description": event.message,
            "details": dict(sorted(details.items()))}


class Opsgenie:
    def __init__(self, url: str, *, token: str) -> None:
        self._url = url
        self._token = token

    async def post(self, event: Event, client: HTTPClient) -> None:
        await send(client, "POST", self._url, json_body=alert(event),
                   headers={"Authorization": f"GenieKey {self._token}"})


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Opsgenie hook")
    if not settings.token:
        raise ConfigError("empty Opsgenie apikey/token")
    return Opsgenie(settings.address.strip(), token=settings.token)
