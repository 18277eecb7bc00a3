"""Type ``discord``: the Slack payload, POSTed to the webhook's Slack-compatible endpoint.

Discord webhooks accept Slack's format at ``<webhook URL>/slack``; the suffix is added
unless the address already ends with it. The payload is ``slack``'s: username (the
Provider's, else the reporting controller), an empty channel (Discord webhooks are bound
to one), one attachment coloured ``good`` or ``danger``.
"""

from __future__ import annotations

import posixpath
import urllib.parse

from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import http_url, is_error, send
from fluxd.controllers.notification.providers.slack import attachment, payload
from fluxd.runtime.events import Event


class Discord:
    def __init__(self, url: str, *, username: str) -> None:
        self._url = url
        self._username = username

    async def post(self, event: Event, client: HTTPClient) -> None:
        color = "danger" if is_error(event) else "good"
        body = payload("", self._username or event.reporting_controller,
                       [attachment(event, color)])
        await send(client, "POST", self._url, json_body=body)


def slack_endpoint(address: str) -> str:
    """``address`` with ``/slack`` joined to its path (cleaned, as Go's ``path.Join``)."""
    if address.endswith("/slack"):
        return address
    url = urllib.parse.urlsplit(address)
    path = posixpath.normpath(posixpath.join("/" + url.path.lstrip("/"), "slack"))
    return urllib.parse.urlunsplit(url._replace(path=path))


def notifier(settings: ProviderSettings) -> Notifier:
    address = settings.address.strip()
    http_url(address, "Discord hook")
    return Discord(slack_endpoint(address), username=settings.username)
