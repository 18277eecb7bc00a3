"""Type ``sentry``: an error event or a transaction, sent to a Sentry DSN's envelope API.

Flux uses the Sentry Go SDK; this sends what that SDK sends, by hand: one envelope
(``POST <scheme>://<host>[/<path>]/api/<project>/envelope/``, ``X-Sentry-Auth`` with the
DSN's public key, ``Content-Type: application/x-sentry-envelope``) per event. An error
event becomes a Sentry event (level ``error``, the message, ``server_name`` = the
reporting controller, ``transaction`` = ``Kind: namespace/name``, the metadata as
``extra``); an info event becomes a transaction with one ``event`` span, tagged
``flux_involved_object_kind``/``…_namespace``/``…_name``, ``flux_reporting_controller``,
``flux_reporting_instance``, ``flux_reason`` and the metadata, starting and ending at
the event time. The channel is the ``environment``. The address is the DSN
(``https://<key>@<host>/<project>``).
"""

from __future__ import annotations

import urllib.parse
import uuid
from typing import Any

from fluxd.clock import rfc3339
from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers.generic import go_json, origin, send
from fluxd.runtime.events import SEVERITY_ERROR, SEVERITY_INFO, Event

SDK = {"name": "fluxd", "version": "0.1.0"}
PROTOCOL_VERSION = 7


def transaction_name(event: Event) -> str:
    ref = event.involved_object
    return f"{ref.kind}: {ref.namespace}/{ref.name}"


def error_event(event: Event, event_id: str, environment: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": event_id,
        "level": "error",
        "message": event.message,
        "timestamp": rfc3339(event.timestamp),
        "server_name": event.reporting_controller,
        "transaction": transaction_name(event),
        "extra": dict(sorted(event.metadata.items())),
        "platform": "other",
        "sdk": SDK,
    }
    if environment:
        body["environment"] = environment
    return body


def span_tags(event: Event) -> dict[str, str]:
    ref = event.involved_object
    tags = {
        "flux_involved_object_kind": ref.kind,
        "flux_involved_object_namespace": ref.namespace,
        "flux_involved_object_name": ref.name,
        "flux_reporting_controller": event.reporting_controller,
        "flux_reporting_instance": event.reporting_instance,
        "flux_reason": event.reason,
        **event.metadata,
    }
    return dict(sorted(tags.items()))


def transaction(event: Event, event_id: str, environment: str, *, trace_id: str,
                span_id: str) -> dict[str, Any]:
    stamp = rfc3339(event.timestamp)
    tags = span_tags(event)
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": "transaction",
        "transaction": transaction_name(event),
        "message": event.message,
        "contexts": {"trace": {"trace_id": trace_id, "span_id": span_id, "op": "event"}},
        "tags": tags,
        "timestamp": stamp,
        "start_timestamp": stamp,
        # the SDK lists the transaction's own span, as Flux builds it
        "spans": [{"trace_id": trace_id, "span_id": span_id, "op": "event", "tags": tags,
                   "start_timestamp": stamp, "timestamp": stamp}],
        "platform": "other",
        "sdk": SDK,
    }
    if environment:
        body["environment"] = environment
    return body


def envelope(item_type: str, payload: dict[str, Any], dsn: str) -> bytes:
    item = go_json(payload)
    header = {"event_id": payload["event_id"], "dsn": dsn, "sdk": SDK}
    item_header = {"type": item_type, "length": len(item)}
    return b"\n".join([go_json(header), go_json(item_header), item]) + b"\n"


class Sentry:
    def __init__(self, dsn: str, *, url: str, auth: str, environment: str) -> None:
        self._dsn = dsn
        self._url = url
        self._auth = auth
        self._environment = environment

    async def post(self, event: Event, client: HTTPClient) -> None:
        event_id = uuid.uuid4().hex
        if event.severity == SEVERITY_ERROR:
            body = envelope("event", error_event(event, event_id, self._environment),
                            self._dsn)
        elif event.severity == SEVERITY_INFO:
            trace = transaction(event, event_id, self._environment,
                                trace_id=uuid.uuid4().hex, span_id=uuid.uuid4().hex[:16])
            body = envelope("transaction", trace, self._dsn)
        else:
            return  # Flux captures nothing for other severities
        await send(client, "POST", self._url, data=body, headers={
            "Content-Type": "application/x-sentry-envelope", "X-Sentry-Auth": self._auth})


def notifier(settings: ProviderSettings) -> Notifier:
    dsn = settings.address.strip()
    if not dsn:
        raise ConfigError("DSN cannot be empty")
    url = urllib.parse.urlsplit(dsn)
    try:
        url.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"invalid Sentry DSN: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("invalid Sentry DSN: expected https://<key>@<host>/<project>")
    if not url.username:
        raise ConfigError("invalid Sentry DSN: empty public key (username)")
    prefix, _, project = url.path.rstrip("/").rpartition("/")
    if not project:
        raise ConfigError("invalid Sentry DSN: empty project id")
    auth = (f"Sentry sentry_version={PROTOCOL_VERSION}, "
            f"sentry_client={SDK['name']}/{SDK['version']}, sentry_key={url.username}")
    if url.password:
        auth += f", sentry_secret={url.password}"
    return Sentry(dsn, url=f"{origin(url)}{prefix}/api/{project}/envelope/", auth=auth,
                  environment=settings.channel)
