"""GitLab commit statuses (Provider type ``gitlab``), as Flux's ``internal/notifier/gitlab.go``.

The address is the project URL, subgroups included
(``https://gitlab.com/group/sub/project``), or ``https://host/<project number>``; the
API is ``<scheme>://<host>/api/v4`` with the project id path-escaped
(``group%2Fsub%2Fproject``). The token (Secret ``token``, else ``password``) goes in
``PRIVATE-TOKEN``.

Progressing events are skipped; info is ``success``, error ``failed``. The commit's
statuses named like this one are listed (GitLab lists the latest per name) and nothing
is posted when one has the same state and description; otherwise
``POST /projects/{id}/statuses/{sha}`` with ``state``, ``name`` (the status id) and
``description``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers import gitcommon
from fluxd.runtime.events import Event


def api_base(host: str) -> str:
    return f"{host}/api/v4"


def project_settings(settings: ProviderSettings) -> tuple[str, str, dict[str, str]]:
    """``(API base, project URL, headers)``; ``ConfigError`` without a token or a
    project path."""
    token = gitcommon.token_or_password(settings)
    if not token:
        raise ConfigError("gitlab token cannot be empty")
    address = gitcommon.parse_address(settings.address)
    if not address.path:
        raise ConfigError(f"invalid repository id {address.path!r}")
    api = api_base(address.host)
    project = f"{api}/projects/{gitcommon.segment(address.path)}"
    return api, project, {"PRIVATE-TOKEN": token}


def state(severity: str) -> str:
    return gitcommon.severity_state(
        severity, success="success", failure="failed",
        refusal="can't convert severity {severity} to a gitlab state")

class GitLab:
    """Posts commit statuses to one GitLab project."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        _, self.project, self.headers = project_settings(settings)

    async def post(self, event: Event, client: HTTPClient) -> None:
        sha = gitcommon.status_commit(event)
        if sha is None:
            return
        name = gitcommon.status_id(self.settings, event)
        status = {"state": state(event.severity), "name": name,
                  "description": gitcommon.describe(event)}
        step = "unable to list commit status"
        listing = await gitcommon.call(
            client, step, "GET",
            f"{self.project}/repository/commits/{sha}/statuses?{urlencode({'name': name})}",
            headers=self.headers)
        for item in gitcommon.read_list(listing, step):
            if (item.get("sha") == sha and item.get("name") == name
                    and item.get("status") == status["state"]
                    and item.get("description") == status["description"]):
                return
        await gitcommon.call(client, "could not set commit status", "POST",
                             f"{self.project}/statuses/{sha}", json_body=status,
                             headers=self.headers)


def notifier(settings: ProviderSettings) -> Notifier:
    return GitLab(settings)
