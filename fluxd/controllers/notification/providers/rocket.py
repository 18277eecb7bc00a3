"""Type ``rocket``: the Slack payload, POSTed to a Rocket.Chat incoming webhook.

As ``slack`` with Rocket's colours (``#0076D7``, ``#FF0000`` for errors) and, as Flux
does, the Provider's channel and username sent as they are (no fallback to the reporting
controller).
"""

from __future__ import annotations

from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import http_url, is_error, send
from fluxd.controllers.notification.providers.slack import attachment, payload
from fluxd.runtime.events import Event


class Rocket:
    def __init__(self, url: str, *, username: str, channel: str) -> None:
        self._url = url
        self._username = username
        self._channel = channel

    async def post(self, event: Event, client: HTTPClient) -> None:
        color = "#FF0000" if is_error(event) else "#0076D7"
        body = payload(self._channel, self._username, [attachment(event, color)])
        await send(client, "POST", self._url, json_body=body)


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Rocket hook")
    return Rocket(settings.address.strip(), username=settings.username,
                  channel=settings.channel)
