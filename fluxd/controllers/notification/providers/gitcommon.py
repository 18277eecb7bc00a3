"""What the Git Provider types share: addresses, revisions, status ids, comment bodies.

The rules are Flux's (``internal/notifier/util.go``, ``internal/server/
provider_commit_status.go``, ``git_change_request_comment.go``):

- An address is a repository URL: ``https://host/owner/repo[.git]`` (any scheme but
  ``ssh`` is kept; ``ssh://`` and scp-like ``git@host:owner/repo`` become
  ``https://host``). The repository id is the path without its leading ``/`` and its
  ``.git`` suffix: ``owner/repo``, ``group/sub/project``, or a GitLab project number.
- The commit comes from the event metadata, ``commit`` before ``originRevision`` before
  ``revision``; its hash is what follows the last ``:`` (``main@sha1:<hex>``), else the
  last ``/`` (the pre-v1 ``main/<hex>``), else the whole string, and it must be 40
  characters long (a SHA-1) or the event cannot be reported.
- The status id is the Provider's ``commitStatusExpr`` result when it gave one, else
  ``lower("<Kind>/<name>/<first dash-segment of the Provider UID>")``; the description
  is the event reason split on camel case and lower-cased (``reconciliation succeeded``).
- A change-request comment carries an invisible marker naming the Provider UID and the
  object, so each object has one comment per change request that later events edit.

Forge answers go through ``call``: a failure keeps the ``SendError`` retry verdict and
gains a prefix saying which step failed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    ProviderSettings,
    Response,
    SendError,
)
from fluxd.runtime.events import EVENT_GROUP, SEVERITY_ERROR, SEVERITY_INFO, Event

__all__ = ["CHANGE_REQUEST_KEY", "PROGRESSING", "REVISION_KEYS", "GitAddress",
           "authenticated_user", "basic_auth", "call", "change_request", "comment_body",
           "comment_marker", "commit_sha", "describe", "event_revision", "find_comment",
           "latest_status_matches", "parse_address", "parse_revision", "read_json",
           "read_list", "segment", "sha1_hex", "split_camel_case", "status_id",
           "status_name", "text", "token_or_password"]

#: the reason of the events a reconciler sends when it starts working on a revision
PROGRESSING = "Progressing"
#: the metadata keys that may carry the commit, strongest first
REVISION_KEYS = ("commit", "originRevision", "revision")
CHANGE_REQUEST_KEY = "change_request"
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>.*)$")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True)
class GitAddress:
    """A repository address split as Flux splits it."""

    #: ``scheme://host[:port]``, the base the forge's API hangs off
    host: str
    #: the repository id: ``owner/repo``, ``group/sub/project``, ``12345``
    path: str

    def parts(self, count: int) -> list[str]:
        """The id's ``/``-separated parts; ``ConfigError`` unless there are ``count``."""
        parts = self.path.split("/")
        if len(parts) != count:
            raise ConfigError(f"invalid repository id {self.path!r}")
        return parts


def parse_address(address: str) -> GitAddress:
    """Split a repository address; ``ConfigError`` when it names no host."""
    text = address.strip()
    if not text:
        raise ConfigError("the provider address is empty: it must be a repository URL")
    if _URL_SCHEME.match(text):
        try:
            url = urlsplit(text)
            netloc = url.hostname or ""
            port = url.port
        except ValueError as exc:
            raise ConfigError(f"failed parsing URL {address!r}: {exc}") from None
        scheme = "https" if url.scheme.lower() == "ssh" else url.scheme.lower()
        if ":" in netloc:  # an IPv6 literal goes back in brackets
            netloc = f"[{netloc}]"
        if port is not None:
            netloc = f"{netloc}:{port}"
        path = url.path
    else:
        scp = _SCP_LIKE.match(text)
        if scp is None:
            raise ConfigError(f"failed parsing URL {address!r}: not a repository URL")
        scheme, netloc, path = "https", scp.group("host"), scp.group("path")
    if not netloc:
        raise ConfigError(f"failed parsing URL {address!r}: no host")
    path = path.lstrip("/")
    path = path.removesuffix(".git")
    return GitAddress(host=f"{scheme}://{netloc}", path=path)


def segment(value: str) -> str:
    """``value`` escaped to be one path segment (``/`` included)."""
    return quote(value, safe="")


def token_or_password(settings: ProviderSettings) -> str:
    """The API token: the Secret's ``token``, else its ``password`` (as Flux's GitHub,
    GitLab and Gitea types take it)."""
    return settings.token or settings.password


def basic_auth(username: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic auth."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


# -- what the event says --------------------------------------------------------------


def _metadata(event: Event, key: str) -> str | None:
    # The dispatcher hands over merged metadata (prefixes stripped); an event taken
    # straight from an emitter still has them.
    for candidate in (key, f"{event.involved_object.group}/{key}", f"{EVENT_GROUP}/{key}"):
        if candidate in event.metadata:
            return event.metadata[candidate]
    return None


def event_revision(event: Event) -> str | None:
    """The revision a commit status is about: ``commit``, ``originRevision``, then
    ``revision``."""
    for key in REVISION_KEYS:
        value = _metadata(event, key)
        if value is not None:
            return value
    return None


def parse_revision(revision: str) -> str:
    """The commit hash in a revision; ``ValueError`` when it is not a SHA-1."""
    if ":" in revision:
        found = revision.rpartition(":")[2]
    elif "/" in revision:
        found = revision.rpartition("/")[2]
    else:
        found = revision
    if len(found) != 40:
        raise ValueError(f"failed to extract commit hash from '{revision}' revision")
    return found


def commit_sha(event: Event) -> str | None:
    """The commit an event is about; ``None`` when it names no revision (nothing to
    report); ``SendError`` (not retryable) when the revision holds no commit hash."""
    revision = event_revision(event)
    if revision is None:
        return None
    try:
        return parse_revision(revision)
    except ValueError as exc:
        raise SendError(str(exc), retryable=False) from None


def status_commit(event: Event) -> str | None:
    """The commit a status is about; None when the event names none, and for a
    Progressing event (only Gitea shows those, as pending)."""
    if event.reason == PROGRESSING:
        return None
    return commit_sha(event)


def severity_state(severity: str, *, success: str, failure: str, refusal: str) -> str:
    """A forge's status state for an event's severity: ``success`` for info, ``failure``
    for error; anything else is refused with ``refusal``."""
    if severity == SEVERITY_INFO:
        return success
    if severity == SEVERITY_ERROR:
        return failure
    raise SendError(refusal.format(severity=repr(severity)), retryable=False)


def split_camel_case(text: str) -> list[str]:
    """``ReconciliationSucceeded`` → ``["Reconciliation", "Succeeded"]``; runs of upper
    case keep their last letter for the word that follows (``PDFLoader`` → ``PDF``,
    ``Loader``); digits and other characters make words of their own."""

    def kind(char: str) -> int:
        if char.islower():
            return 1
        if char.isupper():
            return 2
        if char.isdigit():
            return 3
        return 4

    runs: list[list[str]] = []
    last = 0
    for char in text:
        current = kind(char)
        if runs and current == last:
            runs[-1].append(char)
        else:
            runs.append([char])
        last = current
    for i in range(len(runs) - 1):
        if runs[i][0].isupper() and runs[i + 1][0].islower():
            runs[i + 1].insert(0, runs[i].pop())
    return ["".join(run) for run in runs if run]


def describe(event: Event) -> str:
    """The status description: the reason in lower-case words."""
    return " ".join(split_camel_case(event.reason)).lower()


def status_name(event: Event) -> str:
    """``lower("<Kind>/<name>")``, the name Bitbucket shows for a status."""
    ref = event.involved_object
    return f"{ref.kind}/{ref.name}".lower()


def status_id(settings: ProviderSettings, event: Event) -> str:
    """The commit status id (context): the ``commitStatusExpr`` result when there is
    one, else kind, name and the first part of the Provider UID, lower-cased."""
    if settings.commit_status:
        return settings.commit_status
    ref = event.involved_object
    return f"{ref.kind}/{ref.name}/{settings.uid.split('-')[0]}".lower()


def sha1_hex(text: str) -> str:
    """Hex SHA-1 of ``text``: Bitbucket keys are limited to 40 characters."""
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def latest_status_matches(statuses: Iterable[tuple[object, str, str] | None],
                          wanted: tuple[object, str, str]) -> bool:
    """Whether the newest listed status with ``wanted``'s context has its state and
    description. ``statuses`` are ``(context, state, description)``, newest first;
    ``None`` stands for one that lacks a field and is passed over."""
    for entry in statuses:
        if entry is None:
            continue
        if entry[0] == wanted[0]:
            return entry[1:] == wanted[1:]
    return False


# -- change-request comments ---------------------------------------------------------


def change_request(event: Event) -> int:
    """The change-request number from the ``change_request`` metadata key;
    ``SendError`` (not retryable) when it is missing or not a number."""
    value = _metadata(event, CHANGE_REQUEST_KEY)
    if value is None:
        raise SendError(f'missing "{CHANGE_REQUEST_KEY}" metadata key', retryable=False)
    if not _INTEGER.match(value):
        raise SendError(f'invalid "{CHANGE_REQUEST_KEY}" metadata value "{value}": not an '
                        "integer", retryable=False)
    return int(value)


def comment_marker(prefix: str, uid: str, event: Event) -> str:
    """The HTML comment that identifies the comment about one object from one
    Provider: ``<!-- <prefix>:<uid>/<Kind>/<namespace>/<name> -->``."""
    ref = event.involved_object
    return f"<!-- {prefix}:{uid}/{ref.kind}/{ref.namespace}/{ref.name} -->"


def comment_body(prefix: str, uid: str, event: Event) -> str:
    """The Markdown comment for an event: the marker, a heading, the object, the
    message and the metadata (sorted, without ``change_request``)."""
    ref = event.involved_object
    icon = "\u26a0\ufe0f" if event.severity == SEVERITY_ERROR else "\u2139\ufe0f"
    lines = "".join(f"* `{key}`: {event.metadata[key]}\n"
                    for key in sorted(event.metadata) if key != CHANGE_REQUEST_KEY)
    return (f"{comment_marker(prefix, uid, event)}\n\n## Flux Status\n\n"
            f"{icon} {ref.kind}/{ref.namespace}/{ref.name}\n\n{event.message}\n\n"
            f"Metadata:\n{lines}")


# -- talking to the forge ------------------------------------------------------------


async def call(client: HTTPClient, step: str, method: str, url: str, *,
               json_body: Any = None, headers: Mapping[str, str] | None = None,
               ok: tuple[int, ...] = ()) -> Response:
    """``client.request`` whose failure says which ``step`` failed; the retry verdict
    and the status code are kept."""
    try:
        return await client.request(method, url, json_body=json_body, headers=headers, ok=ok)
    except SendError as exc:
        raise SendError(f"{step}: {exc}", retryable=exc.retryable, status=exc.status) from None


def read_json(response: Response, step: str) -> Any:
    """The JSON of an answer; ``SendError`` (not retryable) when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise SendError(f"{step}: the answer is not JSON: {exc}", retryable=False) from None


def read_list(response: Response, step: str) -> list[Mapping[str, Any]]:
    """A JSON array of objects (other items are dropped); ``SendError`` (not
    retryable) for any other answer."""
    data = read_json(response, step)
    if not isinstance(data, list):
        raise SendError(f"{step}: expected a JSON array", retryable=False)
    return [item for item in data if isinstance(item, Mapping)]


def text(item: Mapping[str, Any], key: str) -> str | None:
    """``item[key]`` when it is a string."""
    value = item.get(key)
    return value if isinstance(value, str) else None


def find_comment(comments: Iterable[Mapping[str, Any]], *, author: tuple[str, str],
                 login: str, marker: str) -> object | None:
    """The id of the first comment written by ``login`` whose body holds ``marker``;
    ``author`` says where a comment names its writer (``("user", "login")``)."""
    field, key = author
    for comment in comments:
        writer = comment.get(field)
        body = text(comment, "body") or ""
        if isinstance(writer, Mapping) and writer.get(key) == login and marker in body:
            return comment.get("id")
    return None


async def authenticated_user(client: HTTPClient, url: str, key: str,
                             headers: Mapping[str, str]) -> str:
    """The login of the token's user, read from the forge's ``/user``."""
    step = "failed to get authenticated user info"
    user = read_json(await call(client, step, "GET", url, headers=headers), step)
    login = user.get(key) if isinstance(user, dict) else None
    if not isinstance(login, str) or not login:
        raise SendError(f"{step}: the answer has no {key!r}", retryable=False)
    return login
