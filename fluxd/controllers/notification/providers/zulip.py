"""Type ``zulip``: a stream message, POSTed as a form to Zulip's messages API.

The request goes to ``<scheme>://<host>/api/v1/messages`` (the address's path is
replaced) with the bot's email and API key (Secret ``username``/``password``) as Basic
authentication. The channel is ``<stream>/<topic>``. The form fields ``content``,
``to``, ``topic`` and ``type=stream``; the content is Flux's Markdown post: a
``## Flux Status`` heading, an information sign (⚠️ for errors) and
``Kind/namespace/name``, the message, and a ``Metadata:`` list of ``* `key`: value``
lines (keys sorted, ``change_request`` left out).
"""

from __future__ import annotations

import base64
import urllib.parse

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers.generic import http_url, is_error, send
from fluxd.runtime.events import Event

WARNING_SIGN = "\u26a0\ufe0f"
INFORMATION_SIGN = "\u2139\ufe0f"


def markdown_post(event: Event) -> str:
    ref = event.involved_object
    emoji = WARNING_SIGN if is_error(event) else INFORMATION_SIGN
    metadata = "".join(f"* `{key}`: {value}\n" for key, value in sorted(event.metadata.items())
                       if key != "change_request")
    return (f"## Flux Status\n\n{emoji} {ref.kind}/{ref.namespace}/{ref.name}\n\n"
            f"{event.message}\n\nMetadata:\n{metadata}")


class Zulip:
    def __init__(self, url: str, *, stream: str, topic: str, username: str,
                 password: str) -> None:
        self._url = url
        self._stream = stream
        self._topic = topic
        self._auth = ""
        if username or password:
            self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    async def post(self, event: Event, client: HTTPClient) -> None:
        form = urllib.parse.urlencode(sorted({
            "type": "stream", "to": self._stream, "topic": self._topic,
            "content": markdown_post(event)}.items()))
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._auth:
            headers["Authorization"] = self._auth
        await send(client, "POST", self._url, data=form.encode(), headers=headers)


def notifier(settings: ProviderSettings) -> Notifier:
    url = http_url(settings.address, "Zulip endpoint")
    stream, _, topic = settings.channel.partition("/")
    if not stream or not topic:
        raise ConfigError("invalid Zulip channel format, expected <channel>/<topic>, "
                          f"got '{settings.channel}'")
    endpoint = urllib.parse.urlunsplit(url._replace(path="/api/v1/messages", fragment=""))
    return Zulip(endpoint, stream=stream, topic=topic, username=settings.username,
                 password=settings.password)
