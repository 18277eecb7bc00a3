"""Gitea commit statuses (Provider type ``gitea``), as Flux's ``internal/notifier/gitea.go``.

The address is the repository URL (``https://gitea.example.com/owner/repo``, ``http``
allowed for a self-hosted instance); the API is ``<scheme>://<host>/api/v1`` and the
token (Secret ``token``, else ``password``) goes in ``Authorization: token <token>``.

For each event with a commit: Progressing is ``pending``, other info events
``success``, errors ``failure``. The commit's statuses are listed (newest first, 50)
and nothing is posted when the newest one with the same context already has that state
and description; otherwise ``POST /repos/{owner}/{repo}/statuses/{sha}`` with
``state``, ``target_url`` (empty), ``description`` and ``context`` (the status id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers import gitcommon
from fluxd.runtime.events import Event

#: how many of a commit's statuses are read to find duplicates
STATUS_PAGE = 50


def api_base(host: str) -> str:
    """Gitea's REST API root for a repository host."""
    return f"{host}/api/v1"


def repository_settings(settings: ProviderSettings, kind: str) -> tuple[str, str, str, str]:
    """``(api base, owner, repo, token)`` for a Gitea Provider; ``ConfigError`` without a
    token or a two-part repository id."""
    token = gitcommon.token_or_password(settings)
    if not token:
        raise ConfigError(f"{kind} token cannot be empty")
    address = gitcommon.parse_address(settings.address)
    owner, repo = address.parts(2)
    return api_base(address.host), owner, repo, token


def state(event: Event) -> str:
    """The Gitea status state for an event: pending while Progressing."""
    if event.reason == gitcommon.PROGRESSING:
        return "pending"
    return gitcommon.severity_state(
        event.severity, success="success", failure="failure",
        refusal="can't convert severity {severity} to a gitea state")


class Gitea:
    """Posts commit statuses to one Gitea repository."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self.api, self.owner, self.repo, token = repository_settings(settings, "gitea")
        self.headers = {"Authorization": f"token {token}"}

    def _repository(self) -> str:
        return (f"{self.api}/repos/{gitcommon.segment(self.owner)}/"
                f"{gitcommon.segment(self.repo)}")

    async def post(self, event: Event, client: HTTPClient) -> None:
        sha = gitcommon.commit_sha(event)
        if sha is None:
            return
        status = {"state": state(event), "target_url": "",
                  "description": gitcommon.describe(event),
                  "context": gitcommon.status_id(self.settings, event)}
        step = "could not list commit statuses"
        listing = await gitcommon.call(
            client, step, "GET",
            f"{self._repository()}/commits/{sha}/statuses?limit={STATUS_PAGE}&page=1",
            headers=self.headers)
        listed = [_entry(item) for item in gitcommon.read_list(listing, step)]
        wanted = (status["context"], status["state"], status["description"])
        if gitcommon.latest_status_matches(listed, wanted):
            return
        await gitcommon.call(client, "could not create commit status", "POST",
                             f"{self._repository()}/statuses/{sha}", json_body=status,
                             headers=self.headers)


def _entry(item: Mapping[str, Any]) -> tuple[object, str, str] | None:
    context = gitcommon.text(item, "context")
    # Gitea's listed statuses name the state 'status'
    current = gitcommon.text(item, "status") or gitcommon.text(item, "state")
    description = gitcommon.text(item, "description")
    if not context or not current or not description:
        return None
    return context, current, description


def notifier(settings: ProviderSettings) -> Notifier:
    return Gitea(settings)
