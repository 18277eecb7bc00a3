"""Type ``datadog``: an event, POSTed to Datadog's v1 events API.

Only the address's scheme and host are used (``https://api.datadoghq.com`` or another
site): the request is ``POST <scheme>://<host>/api/v1/events`` with the API key (the
token, required) in ``DD-API-KEY``. The event: title ``Events from the <Kind>
<name>/<namespace>``, the message as text, ``alert_type`` ``error`` or ``info``,
``source_type_name`` ``fluxcd``, ``date_happened`` in Unix seconds, and lowercased tags
``flux_reporting_controller:…``, ``flux_reason:…``, ``kube_kind:…``, ``kube_name:…``,
``kube_namespace:…`` and ``key:value`` per metadata entry.
"""

from __future__ import annotations

from typing import Any

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers.generic import (
    http_url,
    is_error,
    origin,
    send,
    sorted_metadata,
)
from fluxd.runtime.events import Event


def tags(event: Event) -> list[str]:
    ref = event.involved_object
    found = [f"flux_reporting_controller:{event.reporting_controller}",
             f"flux_reason:{event.reason}", f"kube_kind:{ref.kind}",
             f"kube_name:{ref.name}", f"kube_namespace:{ref.namespace}"]
    found += [f"{key}:{value}" for key, value in sorted_metadata(event)]
    return [tag.lower() for tag in found]


def datadog_event(event: Event) -> dict[str, Any]:
    ref = event.involved_object
    # the Datadog client marshals a map, so its keys are sorted
    return {
        "alert_type": "error" if is_error(event) else "info",
        "date_happened": int(event.timestamp.timestamp()),
        "source_type_name": "fluxcd",
        "tags": tags(event),
        "text": event.message,
        "title": f"Events from the {ref.kind} {ref.name}/{ref.namespace}",
    }


class DataDog:
    def __init__(self, url: str, *, api_key: str) -> None:
        self._url = url
        self._api_key = api_key

    async def post(self, event: Event, client: HTTPClient) -> None:
        await send(client, "POST", self._url, json_body=datadog_event(event),
                   headers={"Accept": "application/json", "DD-API-KEY": self._api_key})


def notifier(settings: ProviderSettings) -> Notifier:
    if not settings.token:
        raise ConfigError("token cannot be empty")
    url = http_url(settings.address, "DataDog")
    return DataDog(f"{origin(url)}/api/v1/events", api_key=settings.token)
