"""Type ``telegram``: a MarkdownV2 message, POSTed to the Bot API's ``sendMessage``.

As Flux, the request goes to ``https://api.telegram.org/bot<token>/sendMessage`` whatever
the address says (the docs suggest ``https://api.telegram.org``). Channel and token are
required; the channel is a chat id or ``@channel``, optionally ``<chat>:<thread id>`` for
a forum topic (``message_thread_id``). The text: the bold heading (💫, 🚨 for errors,
``kind/name/namespace``), the message, then ``\\- *key*: value`` lines, every part
escaped for MarkdownV2. The token is in the URL path; ``HTTPClient`` masks it in errors.
"""

from __future__ import annotations

from typing import Any

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers.generic import is_error, send, sorted_metadata
from fluxd.runtime.events import Event

API_URL = "https://api.telegram.org"
#: The characters MarkdownV2 wants escaped, as Flux escapes them.
_SPECIAL = frozenset("\\.-_[]()~>`#+=|{}!*")


def escape(text: str) -> str:
    return "".join("\\" + char if char in _SPECIAL else char for char in text)


def text(event: Event) -> str:
    ref = event.involved_object
    emoji = "🚨" if is_error(event) else "💫"
    heading = f"{emoji} {ref.kind.lower()}/{ref.name}/{ref.namespace}"
    metadata = "".join(f"\\- *{escape(key)}*: {escape(value)}\n"
                       for key, value in sorted_metadata(event))
    return f"*{escape(heading)}*\n{escape(event.message)}\n{metadata}"


class Telegram:
    def __init__(self, url: str, *, channel: str) -> None:
        self._url = url
        self._chat, _, self._thread = channel.partition(":")
        self._has_thread = ":" in channel

    async def post(self, event: Event, client: HTTPClient) -> None:
        body: dict[str, Any] = {"chat_id": self._chat}
        if self._has_thread and self._thread:
            body["message_thread_id"] = self._thread
        body["text"] = text(event)
        body["parse_mode"] = "MarkdownV2"
        await send(client, "POST", self._url, json_body=body)


def notifier(settings: ProviderSettings, *, api_url: str = API_URL) -> Notifier:
    """``api_url`` replaces the Bot API server (tests point it at a loopback server)."""
    if not settings.channel:
        raise ConfigError("empty Telegram channel")
    if not settings.token:
        raise ConfigError("empty Telegram token")
    return Telegram(f"{api_url.rstrip('/')}/bot{settings.token}/sendMessage",
                    channel=settings.channel)
