"""Azure DevOps commit statuses (Provider type ``azuredevops``), as Flux's
``internal/notifier/azure_devops.go``.

The address is ``https://dev.azure.com/<org>/<project>/_git/<repo>``; the API is
``<scheme>://<host>/<org>/<project>/_apis/git/repositories/<repo>`` (version 6.0) with
the personal access token (Secret ``token``) as basic auth with an empty user. Managed
identity (no token) is not supported by fluxd.

Progressing events are skipped; info is ``succeeded``, error ``error``. The genre is
``fluxcd``, or ``fluxcd:<summary>`` when the Alert has a summary. The commit's statuses
are listed and nothing is posted when the first one with the same name and genre has
the same state and description; otherwise
``POST .../commits/{sha}/statuses?api-version=6.0`` with ``state``, ``description`` and
``context`` (``name``: the status id, ``genre``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
    SendError,
)
from fluxd.controllers.notification.providers import gitcommon
from fluxd.runtime.events import Event

API_VERSION = "6.0"
GENRE = "fluxcd"


def state(severity: str) -> str:
    return gitcommon.severity_state(
        severity, success="succeeded", failure="error",
        refusal="can't convert severity {severity} to an azure devops state")

def genre(event: Event) -> str:
    summary = event.metadata.get("summary")
    return f"{GENRE}:{summary}" if summary is not None else GENRE


class AzureDevOps:
    """Posts commit statuses to one Azure DevOps repository."""

    def __init__(self, settings: ProviderSettings) -> None:
        if not settings.token:
            raise ConfigError("azure devops token cannot be empty (fluxd does not support "
                              "managed identity)")
        address = gitcommon.parse_address(settings.address)
        org, project, _, repo = address.parts(4)
        self.settings = settings
        self.repository = (f"{address.host}/{gitcommon.segment(org)}/"
                           f"{gitcommon.segment(project)}/_apis/git/repositories/"
                           f"{gitcommon.segment(repo)}")
        self.headers = {"Authorization": gitcommon.basic_auth("", settings.token)}

    async def post(self, event: Event, client: HTTPClient) -> None:
        sha = gitcommon.status_commit(event)
        if sha is None:
            return
        name, kind = gitcommon.status_id(self.settings, event), genre(event)
        current, description = state(event.severity), gitcommon.describe(event)
        status = {"context": {"genre": kind, "name": name}, "description": description,
                  "state": current}
        url = f"{self.repository}/commits/{sha}/statuses?api-version={API_VERSION}"
        step = "could not list commit statuses"
        listing = gitcommon.read_json(
            await gitcommon.call(client, step, "GET", url, headers=self.headers), step)
        values = listing.get("value") if isinstance(listing, dict) else None
        if not isinstance(values, list):
            raise SendError(f"{step}: expected an object with a 'value' list",
                            retryable=False)
        listed = [_entry(item) for item in values if isinstance(item, dict)]
        if gitcommon.latest_status_matches(listed, ((name, kind), current, description)):
            return
        await gitcommon.call(client, "could not create commit status", "POST", url,
                             json_body=status, headers=self.headers)


def _entry(item: Mapping[str, Any]) -> tuple[object, str, str] | None:
    context = item.get("context")
    if not isinstance(context, dict):
        return None
    name, kind = gitcommon.text(context, "name"), gitcommon.text(context, "genre")
    current, description = gitcommon.text(item, "state"), gitcommon.text(item, "description")
    if name is None or kind is None or current is None or description is None:
        return None
    return (name, kind), current, description


def notifier(settings: ProviderSettings) -> Notifier:
    return AzureDevOps(settings)
