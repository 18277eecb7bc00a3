"""Type ``pagerduty``: Events API v2 alerts, and change events for info events.

Only the address's scheme and host are used: every event is POSTed to
``<scheme>://<host>/v2/enqueue`` with the channel as routing key and the involved
object's UID as dedup key. An error triggers an incident (summary ``<reason in words>:
kind/name``, source ``Flux <controller>``, severity, timestamp, component = name, group =
kind, custom details = message and metadata); any other event resolves it, and an info
event is also POSTed to ``/v2/change/enqueue`` as a change event. ``Progressing`` events
are not sent.
"""

from __future__ import annotations

from typing import Any

from fluxd.clock import rfc3339
from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import http_url, is_error, origin, send
from fluxd.runtime.events import SEVERITY_INFO, SEVERITY_TRACE, Event

PROGRESSING_REASON = "Progressing"


def _char_class(char: str) -> int:
    if char.islower():
        return 1
    if char.isupper():
        return 2
    return 3 if char.isdigit() else 4


def split_camel_case(text: str) -> list[str]:
    """Flux's splitter: runs of one class (lower, upper, digit, other), then the last
    capital of an upper-case run moves to the lower-case run after it
    (``PDFLoader`` → ``PDF``, ``Loader``)."""
    runs: list[str] = []
    last = 0
    for char in text:
        cls = _char_class(char)
        if runs and cls == last:
            runs[-1] += char
        else:
            runs.append(char)
        last = cls
    for i in range(len(runs) - 1):
        if runs[i][0].isupper() and runs[i + 1][0].islower():
            runs[i + 1] = runs[i][-1] + runs[i + 1]
            runs[i] = runs[i][:-1]
    return [run for run in runs if run]


def summary(event: Event) -> str:
    ref = event.involved_object
    description = " ".join(split_camel_case(event.reason)).lower()
    return f"{description}: {ref.kind}/{ref.name}".lower()


def severity(value: str) -> str:
    return {SEVERITY_INFO: "info", SEVERITY_TRACE: "info"}.get(value, "error")


def details(event: Event) -> dict[str, Any]:
    # Flux's metadata is a Go map: absent means null
    return {"message": event.message,
            "metadata": dict(sorted(event.metadata.items())) if event.metadata else None}


def alert_event(event: Event, routing_key: str) -> dict[str, Any]:
    body: dict[str, Any] = {"routing_key": routing_key,
                            "event_action": "trigger" if is_error(event) else "resolve"}
    if event.involved_object.uid:
        body["dedup_key"] = event.involved_object.uid
    if is_error(event):
        ref = event.involved_object
        payload: dict[str, Any] = {"summary": summary(event),
                                   "source": f"Flux {event.reporting_controller}",
                                   "severity": severity(event.severity),
                                   "timestamp": rfc3339(event.timestamp)}
        if ref.name:
            payload["component"] = ref.name
        if ref.kind:
            payload["group"] = ref.kind
        payload["custom_details"] = details(event)
        body["payload"] = payload
    return body


def change_event(event: Event, routing_key: str) -> dict[str, Any]:
    return {"routing_key": routing_key,
            "payload": {"source": f"Flux {event.reporting_controller}",
                        "summary": summary(event), "timestamp": rfc3339(event.timestamp),
                        "custom_details": details(event)},
            "links": None}


class PagerDuty:
    def __init__(self, endpoint: str, *, routing_key: str) -> None:
        self._endpoint = endpoint
        self._routing_key = routing_key

    async def post(self, event: Event, client: HTTPClient) -> None:
        if event.reason == PROGRESSING_REASON:
            return
        await send(client, "POST", f"{self._endpoint}/v2/enqueue",
                   json_body=alert_event(event, self._routing_key))
        if event.severity == SEVERITY_INFO:
            await send(client, "POST", f"{self._endpoint}/v2/change/enqueue",
                       json_body=change_event(event, self._routing_key))


def notifier(settings: ProviderSettings) -> Notifier:
    url = http_url(settings.address, "PagerDuty endpoint")
    return PagerDuty(origin(url), routing_key=settings.channel)
