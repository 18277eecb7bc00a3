"""Bitbucket Server and Data Center build statuses (Provider type ``bitbucketserver``), as
Flux's ``internal/notifier/bitbucketserver.go``.

The address must be the HTTP(S) clone URL,
``https://host[:port][/context]/scm/<project>/<repo>.git``: what precedes the last
``/scm/`` is the context path. Auth is the Secret ``token`` as a bearer token, else
``username`` (Provider or Secret) and ``password`` for basic auth.

Progressing events are skipped; info is ``SUCCESSFUL``, error ``FAILED``. The key is the
SHA-1 of the status id, the name ``<kind>/<name> [<description>]``. The build status
with that key is read (``GET .../commits/{sha}/builds?key=<key>``, 404 meaning none)
and nothing is posted when key, state, description and name all match; otherwise
``POST <context>/rest/api/latest/projects/{project}/repos/{repo}/commits/{sha}/builds``
with ``description``, ``key``, ``name``, ``state`` and ``url`` (the Provider address).
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

CLONE_MARKER = "/scm/"


def parse_clone_url(address: str) -> tuple[str, str, str]:
    """``(host, context path, "<project>/<repo>")`` of an HTTP(S) clone URL."""
    scheme = address.split(":", 1)[0]
    if scheme not in ("http", "https"):
        raise ConfigError(f"could not parse git address: unsupported scheme type in address: "
                          f"{scheme}. Must be http or https")
    parsed = gitcommon.parse_address(address)
    with_context = "/" + parsed.path
    at = with_context.rfind(CLONE_MARKER)
    if at < 0:
        raise ConfigError("could not parse git address: supplied provider address is not "
                          "http(s) git clone url")
    return parsed.host, with_context[:at], with_context[at + len(CLONE_MARKER):]


def state(severity: str) -> str:
    return gitcommon.severity_state(
        severity, success="SUCCESSFUL", failure="FAILED",
        refusal="couldn't convert to bitbucket server state: bitbucket server state "
                "generated on info or error events only")

class BitbucketServer:
    """Posts build statuses to one Bitbucket Server / Data Center repository."""

    def __init__(self, settings: ProviderSettings) -> None:
        host, context, repository = parse_clone_url(settings.address)
        self.project, self.repo = gitcommon.GitAddress(host, repository).parts(2)
        if not settings.token and not (settings.username and settings.password):
            raise ConfigError("invalid credentials, expected to be one of username/password "
                              "or API Token")
        self.settings = settings
        self.base = f"{host}{context}/rest/api/latest"
        auth = (f"Bearer {settings.token}" if settings.token
                else gitcommon.basic_auth(settings.username, settings.password))
        self.headers = {"Authorization": auth, "x-atlassian-token": "no-check",
                        "x-requested-with": "XMLHttpRequest"}

    async def post(self, event: Event, client: HTTPClient) -> None:
        sha = gitcommon.status_commit(event)
        if sha is None:
            return
        description = gitcommon.describe(event)
        status = {"description": description,
                  "key": gitcommon.sha1_hex(gitcommon.status_id(self.settings, event)),
                  "name": f"{gitcommon.status_name(event)} [{description}]",
                  "state": state(event.severity), "url": self.settings.address}
        builds = (f"{self.base}/projects/{gitcommon.segment(self.project)}/repos/"
                  f"{gitcommon.segment(self.repo)}/commits/{sha}/builds")
        step = "could not get existing commit status"
        existing = await gitcommon.call(
            client, step, "GET", f"{builds}?{urlencode({'key': status['key']})}",
            headers=self.headers, ok=(404,))
        if existing.status != 404:
            current = gitcommon.read_json(existing, step)
            if isinstance(current, dict) and all(
                    current.get(field) == status[field]
                    for field in ("key", "state", "description", "name")):
                return
        await gitcommon.call(client, "could not post build status", "POST", builds,
                             json_body=status, headers=self.headers)


def notifier(settings: ProviderSettings) -> Notifier:
    return BitbucketServer(settings)
