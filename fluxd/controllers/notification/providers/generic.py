"""Types ``generic`` and ``generic-hmac``: the event itself, POSTed to a webhook.

The body is the event JSON exactly as Flux marshals it (``Event.to_json`` with Go's
encoding: compact, metadata keys sorted, ``<``, ``>`` and ``&`` escaped) to the
Provider's address, with ``Gotk-Component: <reportingController>`` and the Secret's
``headers`` (which may override it). ``generic-hmac`` also sends
``X-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the token>`` and needs a
token. The address must be an http(s) URL.

The other alerting types share the pieces defined here: ``event_json`` (GitHub dispatch,
Matrix's transaction id), ``go_json``, ``http_url`` and the object and metadata
renderings Flux uses in messages.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
    Response,
)
from fluxd.runtime.events import SEVERITY_ERROR, Event

__all__ = ["event_json", "go_json", "http_url", "is_error", "merge_headers", "notifier",
           "object_label", "origin", "send", "sorted_metadata"]

#: Go's encoding/json escapes these inside strings (HTML safety and JavaScript line ends).
_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
               "\u2029": "\\u2029"}


def go_json(value: Any) -> bytes:
    """``value`` encoded as Go's ``json.Marshal`` does: compact, UTF-8, HTML-escaped.
    Keys keep their order; sort them first where Go marshals a map."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)  # these only ever occur inside strings
    return text.encode("utf-8", errors="replace")


def event_json(event: Event) -> bytes:
    """The event as a Flux controller (and notification-controller) marshals it."""
    body = event.to_json()
    if "metadata" in body:
        body["metadata"] = dict(sorted(body["metadata"].items()))
    return go_json(body)


def http_url(address: str, what: str) -> urllib.parse.SplitResult:
    """``address`` parsed; ``ConfigError`` naming ``what`` unless it is an absolute
    http(s) URL with a host."""
    try:
        url = urllib.parse.urlsplit(address.strip())
        url.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"invalid {what} URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        # the address is not quoted: for many types it holds the webhook's secret
        raise ConfigError(f"invalid {what} URL: expected an absolute http(s) URL")
    return url


def origin(url: urllib.parse.SplitResult) -> str:
    """``scheme://host[:port]`` of ``url``, without credentials, path or query."""
    return f"{url.scheme}://{url.netloc.rpartition('@')[2]}"


def is_error(event: Event) -> bool:
    return event.severity == SEVERITY_ERROR


def object_label(event: Event) -> str:
    """``kind/name.namespace`` with the kind lowercased, as Flux titles its messages."""
    ref = event.involved_object
    return f"{ref.kind.lower()}/{ref.name}.{ref.namespace}"


def sorted_metadata(event: Event) -> list[tuple[str, str]]:
    """The metadata in key order (Flux iterates a Go map, so its order is random)."""
    return sorted(event.metadata.items())


def merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win, header names compared without case (as Go's ``Header.Set``);
    the winning spelling is kept."""
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            for existing in [k for k in merged if k.lower() == name.lower()]:
                del merged[existing]
            merged[name] = value
    return merged


async def send(client: HTTPClient, method: str, url: str, *,
               headers: Mapping[str, str] | None = None, json_body: Any = None,
               data: bytes | None = None) -> Response:
    """``client.request`` with a JSON body encoded as Go encodes it, and our header names
    spelt as the Secret's ``headers`` spell them, so that a header set by both is sent
    once (ours winning) rather than twice."""
    sent = dict(headers or {})
    if json_body is not None:
        data = go_json(json_body)
        if not any(name.lower() == "content-type" for name in sent):
            sent["Content-Type"] = "application/json"
    spelling = {name.lower(): name for name in client.settings.headers}
    respelt = {spelling.get(name.lower(), name): value for name, value in sent.items()}
    if "authorization" in {name.lower() for name in [*respelt, *spelling]}:
        url = _without_credentials(url)  # as Go, an Authorization header beats them
    return await client.request(method, url, data=data, headers=respelt)


def _without_credentials(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Forwarder:
    """POSTs the event JSON, signed when an HMAC key is given."""

    def __init__(self, url: str, headers: Mapping[str, str], hmac_key: bytes | None) -> None:
        self._url = url
        self._headers = dict(headers)
        self._hmac_key = hmac_key

    async def post(self, event: Event, client: HTTPClient) -> None:
        body = event_json(event)
        headers = merge_headers({"Content-Type": "application/json",
                                 "Gotk-Component": event.reporting_controller},
                                self._headers)
        if self._hmac_key is not None:
            digest = hmac.new(self._hmac_key, body, hashlib.sha256).hexdigest()
            headers = merge_headers(headers, {"X-Signature": f"sha256={digest}"})
        await send(client, "POST", self._url, data=body, headers=headers)


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "webhook")
    key: bytes | None = None
    if settings.type == "generic-hmac":
        if not settings.token:
            raise ConfigError("generic-hmac needs the HMAC key in the Secret key 'token'")
        key = settings.token.encode()
    return Forwarder(settings.address.strip(), settings.headers, key)
