"""Type ``webex``: a Markdown message, POSTed to the Webex messages API.

The address is ``https://webexapis.com/v1/messages``, the channel the room id and the
token the bot's access token (``Authorization: Bearer``). The Markdown: ✅ (💣 for
errors) and ``**kind/name.namespace**``, the message, then ``>**key**: value`` lines.
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


def markdown(event: Event) -> str:
    emoji = "💣" if is_error(event) else "✅"
    lines = [f"{emoji} **{object_label(event)}**", event.message]
    lines += [f">**{key}**: {value}" for key, value in sorted_metadata(event)]
    return "".join(line + "\n" for line in lines)


class Webex:
    def __init__(self, url: str, *, room: str, token: str) -> None:
        self._url = url
        self._room = room
        self._token = token

    async def post(self, event: Event, client: HTTPClient) -> None:
        body: dict[str, Any] = {}
        if self._room:
            body["roomId"] = self._room
        body["markdown"] = markdown(event)
        await send(client, "POST", self._url, json_body=body,
                   headers={"Authorization": f"Bearer {self._token}"})


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Webex hook")
    return Webex(settings.address.strip(), room=settings.channel, token=settings.token)
