"""GitHub commit statuses (Provider type ``github``), as Flux's ``internal/notifier/github.go``.

The address is the repository URL. ``github.com`` is served by
``https://api.github.com``; any other host is GitHub Enterprise Server, whose API is
``<scheme>://<host>/api/v3``. The token (Secret ``token``, else ``password``) is sent as
a bearer token; GitHub App credentials are not supported by fluxd.

Progressing events are skipped; info is ``success``, error ``failure``. The commit's
statuses are listed (newest first, 50) and nothing is posted when the newest one with the
same context has that state and description; otherwise
``POST /repos/{owner}/{repo}/statuses/{sha}`` with ``state``, ``description`` and
``context`` (the status id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers import gitcommon
from fluxd.runtime.events import Event

STATUS_PAGE = 50
PUBLIC_API = "https://api.github.com"
API_VERSION = "2022-11-28"


def api_base(host: str) -> str:
    """The REST API root: api.github.com for github.com, ``/api/v3`` on Enterprise."""
    if urlsplit(host).netloc == "github.com":
        return PUBLIC_API
    return f"{host}/api/v3"


def repository_settings(settings: ProviderSettings) -> tuple[str, str, str, dict[str, str]]:
    """``(api base, owner, repo, headers)`` for a GitHub Provider; ``ConfigError``
    without a token or a two-part repository id."""
    token = gitcommon.token_or_password(settings)
    if not token:
        raise ConfigError("github token or github app details must be specified "
                          "(fluxd supports tokens only)")
    address = gitcommon.parse_address(settings.address)
    owner, repo = address.parts(2)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
               "X-GitHub-Api-Version": API_VERSION}
    return api_base(address.host), owner, repo, headers


def state(severity: str) -> str:
    return gitcommon.severity_state(
        severity, success="success", failure="failure",
        refusal="can't convert severity {severity} to a github state")

class GitHub:
    """Posts commit statuses to one GitHub repository."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.api, self.owner, self.repo, self.headers = repository_settings(settings)

    def _repository(self) -> str:
        return (f"{self.api}/repos/{gitcommon.segment(self.owner)}/"
                f"{gitcommon.segment(self.repo)}")

    async def post(self, event: Event, client: HTTPClient) -> None:
        sha = gitcommon.status_commit(event)
        if sha is None:
            return
        status = {"state": state(event.severity), "description": gitcommon.describe(event),
                  "context": gitcommon.status_id(self.settings, event)}
        step = "could not list commit statuses"
        listing = await gitcommon.call(
            client, step, "GET",
            f"{self._repository()}/commits/{sha}/statuses?per_page={STATUS_PAGE}",
            headers=self.headers)
        listed = [_entry(item) for item in gitcommon.read_list(listing, step)]
        if gitcommon.latest_status_matches(
                listed, (status["context"], status["state"], status["description"])):
            return
        await gitcommon.call(client, "could not create commit status", "POST",
                             f"{self._repository()}/statuses/{sha}", json_body=status,
                             headers=self.headers)


def _entry(item: Mapping[str, Any]) -> tuple[object, str, str] | None:
    context = gitcommon.text(item, "context")
    current = gitcommon.text(item, "state")
    description = gitcommon.text(item, "description")
    if context is None or current is None or description is None:
        return None
    return context, current, description


def notifier(settings: ProviderSettings) -> Notifier:
    return GitHub(settings)
