"""Type ``githubdispatch``: a ``repository_dispatch`` event for a GitHub repository.

The address is the repository (``https://github.com/<owner>/<repo>``; ssh and scp-like
forms work too), the token (or the Secret's password) a token that may dispatch. The
request is ``POST <API>/repos/<owner>/<repo>/dispatches``, where the API is
``https://api.github.com/`` for github.com and ``<scheme>://<host>/api/v3/`` for GitHub
Enterprise, with ``{"event_type": "<Kind>/<name>.<namespace>", "client_payload": <the
event JSON>}``. Commit-status update events are not sent. GitHub App authentication is
not supported here: ``ProviderSettings`` carries no app keys.
"""

from __future__ import annotations

import re
import urllib.parse

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers.generic import event_json, go_json, send
from fluxd.runtime.events import Event

API_VERSION = "2022-11-28"
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


def parse_repository(address: str) -> tuple[str, str, str]:
    """``(https://host, owner, repo)`` from a repository address (ssh becomes https)."""
    address = address.strip()
    url = urllib.parse.urlsplit(address)
    if url.scheme in ("http", "https", "ssh", "git+ssh") and url.netloc:
        scheme = "https" if url.scheme in ("ssh", "git+ssh") else url.scheme
        host, path = url.netloc.rpartition("@")[2], url.path
    elif not url.scheme or "://" not in address:
        scp = _SCP_LIKE.match(address)
        if scp is None:
            raise ConfigError("failed parsing URL: not a repository address")
        scheme, host, path = "https", scp["host"], scp["path"]
    else:
        raise ConfigError(f"failed parsing URL: unsupported scheme {url.scheme!r}")
    repository = path.lstrip("/").removesuffix(".git")
    parts = repository.split("/")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"invalid repository id {repository!r}")
    return f"{scheme}://{host}", parts[0], parts[1]


def api_base(host_url: str) -> str:
    """The REST API root for a GitHub host, as go-github derives it."""
    url = urllib.parse.urlsplit(host_url)
    if url.netloc == "github.com":
        return "https://api.github.com/"
    host = url.netloc
    if host.startswith("api.") or ".api." in host:
        return f"{host_url}/"
    return f"{host_url}/api/v3/"


class GitHubDispatch:
    def __init__(self, url: str, *, token: str) -> None:
        self._url = url
        self._token = token

    async def post(self, event: Event, client: HTTPClient) -> None:
        if event.metadata.get("commit_status") == "update":
            return
        ref = event.involved_object
        event_type = f"{ref.kind}/{ref.name}.{ref.namespace}"
        body = (b'{"event_type":' + go_json(event_type) + b',"client_payload":'
                + event_json(event) + b"}")
        await send(client, "POST", self._url, data=body, headers={
            "Accept": "application/vnd.github.v3+json",
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "X-GitHub-Api-Version": API_VERSION,
        })


def notifier(settings: ProviderSettings) -> Notifier:
    token = settings.token or settings.password
    if not token:
        raise ConfigError("github token or github app details must be specified")
    host, owner, repo = parse_repository(settings.address)
    url = f"{api_base(host)}repos/{urllib.parse.quote(owner)}/{urllib.parse.quote(repo)}" \
          "/dispatches"
    return GitHubDispatch(url, token=token)
