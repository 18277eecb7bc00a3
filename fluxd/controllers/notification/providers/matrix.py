"""Type ``matrix``: an ``m.room.message`` text event, PUT into a room.

The request is ``PUT <address>/_matrix/client/r0/rooms/<channel>/send/m.room.message/
<txn id>`` with the access token as ``Authorization: Bearer``; the channel is the room id
(``!room:server``). The transaction id is the SHA-1 of the event's JSON, so a retry of
the same event is deduplicated by the homeserver. The body: 💫 (🚨 for errors) and
``kind/name.namespace``, the message, then ``- key: value`` lines.
"""

from __future__ import annotations

import hashlib

from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import (
    event_json,
    http_url,
    is_error,
    object_label,
    send,
    sorted_metadata,
)
from fluxd.runtime.events import Event


def transaction_id(event: Event) -> str:
    return hashlib.sha1(event_json(event)).hexdigest()


def body_text(event: Event) -> str:
    emoji = "🚨" if is_error(event) else "💫"
    metadata = "".join(f"- {key}: {value}\n" for key, value in sorted_metadata(event))
    return f"{emoji} {object_label(event)}\n{event.message}\n{metadata}"


class Matrix:
    def __init__(self, server: str, *, room: str, token: str) -> None:
        self._server = server
        self._room = room
        self._token = token

    async def post(self, event: Event, client: HTTPClient) -> None:
        url = (f"{self._server}/_matrix/client/r0/rooms/{self._room}"
               f"/send/m.room.message/{transaction_id(event)}")
        await send(client, "PUT", url, json_body={"body": body_text(event), "msgtype": "m.text"},
                   headers={"Authorization": f"Bearer {self._token}"})


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Matrix homeserver")
    return Matrix(settings.address.strip(), room=settings.channel, token=settings.token)
