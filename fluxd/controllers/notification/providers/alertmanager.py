"""Type ``alertmanager``: one firing alert, POSTed to Alertmanager's ``/api/v2/alerts``.

The alert's labels are the event metadata (``summary`` moved to the annotations) plus
``alertname`` (``Flux<Kind><Reason in title case>``), ``severity``, ``reason``, ``kind``,
``name``, ``namespace`` and ``reportingcontroller``; its annotations the ``message`` and
the ``summary``; ``startsAt`` the event time. ``endsAt`` is Go's zero time, as Flux sends
it (Alertmanager then applies its ``resolve_timeout``). Authentication: the token as
``Authorization: Bearer``, else the Secret's username and password as Basic (or
credentials in the address).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from fluxd.clock import rfc3339
from fluxd.controllers.notification.notifier import HTTPClient, Notifier, ProviderSettings
from fluxd.controllers.notification.providers.generic import http_url, send
from fluxd.runtime.events import Event

#: How Go marshals a zero ``time.Time``.
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
#: A word as Unicode segments them, near enough for reasons: letters, digits and ``_``,
#: joined across a single ``'``, ``.`` or ``:``.
_WORD = re.compile(r"\w+(?:['.:]\w+)*")


def title_case(text: str) -> str:
    """Each word capitalised and the rest of it lowercased (``x/text/cases.Title``):
    ``ReconciliationSucceeded`` becomes ``Reconciliationsucceeded``."""
    return _WORD.sub(lambda m: m.group(0)[:1].upper() + m.group(0)[1:].lower(), text)


def alert(event: Event) -> dict[str, Any]:
    ref = event.involved_object
    labels = dict(event.metadata)
    annotations = {"message": event.message}
    if "summary" in labels:
        annotations["summary"] = labels.pop("summary")
    labels.update({
        "alertname": f"Flux{ref.kind}{title_case(event.reason)}",
        "severity": event.severity,
        "reason": event.reason,
        "kind": ref.kind,
        "name": ref.name,
        "namespace": ref.namespace,
        "reportingcontroller": event.reporting_controller,
    })
    return {"status": "firing", "labels": dict(sorted(labels.items())),
            "annotations": dict(sorted(annotations.items())),
            "startsAt": rfc3339(event.timestamp), "endsAt": GO_ZERO_TIME}


class Alertmanager:
    def __init__(self, url: str, *, token: str, username: str, password: str) -> None:
        self._url = url
        self._headers: dict[str, str] = {}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        if username and password:  # Flux sets Basic after Bearer, so Basic wins
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"

    async def post(self, event: Event, client: HTTPClient) -> None:
        await send(client, "POST", self._url, json_body=[alert(event)], headers=self._headers)


def notifier(settings: ProviderSettings) -> Notifier:
    http_url(settings.address, "Alertmanager")
    return Alertmanager(settings.address.strip(), token=settings.token,
                        username=settings.username, password=settings.password)
