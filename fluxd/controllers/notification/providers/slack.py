"""Type ``slack``: one message attachment, POSTed to the Provider's address.

The address is the Web API (``https://slack.com/api/chat.postMessage``, with the bot
token as ``Authorization: Bearer``) or an incoming-webhook URL. The payload carries
``channel`` (the Provider's channel, else empty), ``username`` (the Provider's, else the
reporting controller) and one attachment: colour ``good`` or ``danger`` by severity,
author ``kind/name.namespace``, the message as Markdown text and the metadata as fields.
The Web API answers 200 even for a failure, so its ``ok`` flag decides there (for any
address whose path is ``/api/chat.postMessage``; Flux checks the exact slack.com URL).

``discord`` and ``rocket`` send this same Slack-compatible payload (``attachment`` and
``payload`` are theirs too).
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from fluxd.controllers.notification.notifier import (
    HTTPClient,
    Notifier,
    ProviderSettings,
    SendError,
)
from fluxd.controllers.notification.providers.generic import (
    http_url,
    is_error,
    object_label,
    send,
    sorted_metadata,
)
from fluxd.runtime.events import Event

#: The Web API method's path; only its answers carry the ``ok`` flag.
POST_MESSAGE_PATH = "/api/chat.postMessage"


def attachment(event: Event, color: str) -> dict[str, Any]:
    return {
        "color": color,
        "author_name": object_label(event),
        "text": event.message,
        "mrkdwn_in": ["text"],
        "fields": [{"title": key, "value": value, "short": False}
                   for key, value in sorted_metadata(event)],
    }


def payload(channel: str, username: str, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """Slack's message shape as Flux fills it: the icon fields are always sent, empty."""
    return {"channel": channel, "username": username, "icon_url": "", "icon_emoji": "",
            "attachments": attachments}


class Slack:
    def __init__(self, url: str, *, token: str, username: str, channel: str) -> None:
        self._url = url
        self._token = token
        self._username = username
        self._channel = channel
        self._web_api = urllib.parse.urlsplit(url).path.endswith(POST_MESSAGE_PATH)

    async def post(self, event: Event, client: HTTPClient) -> None:
        color = "danger" if is_error(event) else "good"
        body = payload(self._channel, self._username or event.reporting_controller,
                       [attachment(event, color)])
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        answer = await send(client, "POST", self._url, json_body=body, headers=headers)
        if self._web_api:
            result = _json_or_none(answer.body)
            if not isinstance(result, dict) or result.get("ok") is not True:
                reason = result.get("error") if isinstance(result, dict) else None
                raise SendError(f"Slack responded with error: {reason or 'unreadable answer'}",
                                retryable=False, status=answer.status)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Slack hook")
    return Slack(settings.address.strip(), token=settings.token, username=settings.username,
                 channel=settings.channel)
