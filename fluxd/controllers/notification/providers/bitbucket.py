"""Bitbucket Cloud build statuses (Provider type ``bitbucket``), as Flux's
``internal/notifier/bitbucket.go``.

The address is the repository URL (``https://bitbucket.org/workspace/repo``); the API
is always ``https://api.bitbucket.org/2.0`` (``Bitbucket(api_base=...)`` points a test
elsewhere). The Secret ``token`` is ``<user>:<app-password>`` for basic auth; with the
user ``x-token-auth`` or ``x-bitbucket-api-token-auth`` the second half is a bearer
token.

Progressing events are skipped; info is ``SUCCESSFUL``, error ``FAILED``. The status key
is the SHA-1 of the status id (Bitbucket keys hold 40 characters). The status with that
key is read and nothing is posted when it has the same state and description;
otherwise ``POST /repositories/{owner}/{repo}/commit/{sha}/statuses/build`` with
``key``, ``url`` (``https://bitbucket.org``), ``state``, ``name``
(``<kind>/<name>``) and ``description``.
"""

from __future__ import annotations

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers import gitcommon
from fluxd.runtime.events import Event

API = "https://api.bitbucket.org/2.0"
STATUS_URL = "https://bitbucket.org"
BEARER_USERS = frozenset({"x-token-auth", "x-bitbucket-api-token-auth"})


def state(severity: str) -> str:
    return gitcommon.severity_state(
        severity, success="SUCCESSFUL", failure="FAILED",
        refusal="can't convert severity {severity} to a bitbucket state")

class Bitbucket:
    """Posts build statuses to one Bitbucket Cloud repository."""

    def __init__(self, settings: ProviderSettings, *, api_base: str = API) -> None:
        if not settings.token:
            raise ConfigError("bitbucket token cannot be empty")
        address = gitcommon.parse_address(settings.address)
        credentials = settings.token.split(":")
        if len(credentials) != 2:
            raise ConfigError("invalid token format, expected to be <user>:<password>")
        user, password = credentials
        self.owner, self.repo = address.parts(2)
        self.settings = settings
        self.api = api_base.rstrip("/")
        auth = (f"Bearer {password}" if user in BEARER_USERS
                else gitcommon.basic_auth(user, password))
        self.headers = {"Authorization": auth}

    async def post(self, event: Event, client: HTTPClient) -> None:
        sha = gitcommon.status_commit(event)
        if sha is None:
            return
        status = {"key": gitcommon.sha1_hex(gitcommon.status_id(self.settings, event)),
                  "url": STATUS_URL, "state": state(event.severity),
                  "name": gitcommon.status_name(event),
                  "description": gitcommon.describe(event)}
        statuses = (f"{self.api}/repositories/{gitcommon.segment(self.owner)}/"
                    f"{gitcommon.segment(self.repo)}/commit/{sha}/statuses/build")
        step = "could not get commit status"
        existing = await gitcommon.call(client, step, "GET", f"{statuses}/{status['key']}",
                                        headers=self.headers, ok=(404,))
        if existing.status != 404:
            current = gitcommon.read_json(existing, step)
            if (isinstance(current, dict) and current.get("state") == status["state"]
                    and current.get("description") == status["description"]):
                return
        await gitcommon.call(client, "could not create commit status", "POST", statuses,
                             json_body=status, headers=self.headers)


def notifier(settings: ProviderSettings) -> Notifier:
    return Bitbucket(settings)
