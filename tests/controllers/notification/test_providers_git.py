"""The Git Provider types against a loopback forge: commit statuses and change-request
comments, request for request as Flux sends them."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fluxd.controllers.notification import providers
from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
    SendError,
)
from fluxd.controllers.notification.providers import (
    bitbucket,
    gitcommon,
    gitea,
    github,
    gitlabmergerequestcomment,
)
from fluxd.runtime.events import Event, ObjectReference

pytestmark = pytest.mark.anyio

UID = "0c9c2e41-d2f9-4f9b-9c41-bebc1984d67a"
TOKEN = "s3cr3t-token"
SHA = "5394cb7f48332b2de7c17dd8b8384bbc84b7e738"
OTHER_SHA = "a1afe267b54f38b46b487f6e938a6fd508278c07"
THIRD_SHA = "0123456789abcdef0123456789abcdef01234567"
STATUS_ID = "kustomization/apps/0c9c2e41"
KS_GROUP = "kustomize.toolkit.fluxcd.io"


# -- the loopback forge --------------------------------------------------------------


@dataclass
class Seen:
    """One request the forge got; ``path`` is as sent (percent escapes kept)."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: Any


Handler = Callable[[Seen], "tuple[int, Any] | None"]


@dataclass
class Forge:
    """Records requests and answers as told: a fixed answer per method and path, else a
    handler, else ``200 []`` for GET and ``201 {}`` for the rest."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    answers: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    handler: Handler | None = None

    def answer(self, method: str, path: str, status: int, body: Any = None) -> None:
        self.answers[(method, path)] = (status, body)

    def calls(self) -> list[tuple[str, str]]:
        return [(seen.method, seen.path) for seen in self.seen]


@pytest.fixture
async def forge() -> AsyncIterator[Forge]:
    state = Forge()

    async def receive(request: web.Request) -> web.Response:
        raw = await request.read()
        seen = Seen(request.method, request.rel_url.raw_path, dict(request.rel_url.query),
                    request.headers, json.loads(raw) if raw else None)
        state.seen.append(seen)
        found = state.answers.get((seen.method, seen.path))
        if found is None and state.handler is not None:
            found = state.handler(seen)
        if found is None:
            found = (200, []) if seen.method == "GET" else (201, {})
        status, body = found
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def settings(type: str, address: str, **overrides: Any) -> ProviderSettings:
    values: dict[str, Any] = {"type": type, "name": "forge", "namespace": "flux-system",
                              "uid": UID, "address": address, "token": TOKEN,
                              "timeout": 5.0}
    values.update(overrides)
    return ProviderSettings(**values)


def event(severity: str = "info", reason: str = "ReconciliationSucceeded",
          metadata: Mapping[str, str] | None = None, message: str = "Applied revision",
          ) -> Event:
    """A Kustomization event with its metadata merged as the dispatcher merges it."""
    return Event(
        involved_object=ObjectReference(kind="Kustomization", name="apps",
                                        namespace="flux-system", uid="1234",
                                        api_version=f"{KS_GROUP}/v1"),
        severity=severity, timestamp=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
        message=message, reason=reason, reporting_controller="kustomize-controller",
        metadata=dict({"revision": f"main@sha1:{SHA}"} if metadata is None else metadata))


async def send(notifier: Notifier, ev: Event, session: aiohttp.ClientSession,
               provider: ProviderSettings) -> None:
    await notifier.post(ev, HTTPClient(provider, session))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- shared rules ----------------------------------------------------------------------


@pytest.mark.parametrize("address, host, path", [
    ("https://github.com/foo/bar", "https://github.com", "foo/bar"),
    ("https://gitlab.com/foo/bar.git", "https://gitlab.com", "foo/bar"),
    ("https://gitlab.com/foo/bar/baz.git", "https://gitlab.com", "foo/bar/baz"),
    ("git@gitlab.com:foo/bar.git", "https://gitlab.com", "foo/bar"),
    ("ssh://git@github.com/stefanprodan/podinfo", "https://github.com",
     "stefanprodan/podinfo"),
    ("http://127.0.0.1:3000/org/app", "http://127.0.0.1:3000", "org/app"),
    ("https://gitlab.example.com/12345", "https://gitlab.example.com", "12345"),
])
def test_repository_addresses_split_into_host_and_id_as_flux_splits_them(
        address: str, host: str, path: str) -> None:
    assert gitcommon.parse_address(address) == gitcommon.GitAddress(host, path)


@pytest.mark.parametrize("address", ["", "not a url", "https:///owner/repo",
                                     "https://host:notaport/owner/repo"])
def test_an_address_without_a_host_is_a_configuration_error(address: str) -> None:
    with pytest.raises(ConfigError):
        gitcommon.parse_address(address)


@pytest.mark.parametrize("revision", [
    f"sha1:{SHA}", f"main@sha1:{SHA}", f"environment/dev@sha1:{SHA}", f"main/{SHA}",
    f"environment/dev/{SHA}", SHA,
])
def test_revisions_in_every_accepted_form_give_the_commit_hash(revision: str) -> None:
    assert gitcommon.parse_revision(revision) == SHA


@pytest.mark.parametrize("revision", ["master", "main@sha1:abc", f"sha256:{'a' * 64}"])
def test_a_revision_without_a_sha1_hash_is_refused(revision: str) -> None:
    with pytest.raises(ValueError, match=f"failed to extract commit hash from '{revision}'"):
        gitcommon.parse_revision(revision)


@pytest.mark.parametrize("reason, words", [
    ("ReconciliationSucceeded", ["Reconciliation", "Succeeded"]),
    ("HealthCheckFailed", ["Health", "Check", "Failed"]),
    ("PDFLoader", ["PDF", "Loader"]),
    ("Progressing", ["Progressing"]),
    ("Upgrade2Failed", ["Upgrade", "2", "Failed"]),
    ("", []),
])
def test_reasons_split_on_camel_case(reason: str, words: list[str]) -> None:
    assert gitcommon.split_camel_case(reason) == words


def test_the_default_status_id_is_kind_name_and_the_first_uid_segment_lower_cased() -> None:
    assert gitcommon.status_id(settings("gitea", "https://h/o/r"), event()) == STATUS_ID
    expr = settings("gitea", "https://h/o/r", commit_status="Apps/Prod")
    assert gitcommon.status_id(expr, event()) == "Apps/Prod"


def test_every_git_provider_type_is_registered() -> None:
    types = {"github", "gitlab", "gitea", "bitbucketserver", "bitbucket", "azuredevops",
             "githubpullrequestcomment", "gitlabmergerequestcomment",
             "giteapullrequestcomment"}
    assert types <= providers.supported()


@pytest.mark.parametrize("type, address, overrides, message", [
    ("gitea", "https://gitea.example.com/org/app", {"token": ""}, "gitea token"),
    ("gitea", "gitea.example.com/org/app", {}, "failed parsing URL"),
    ("gitea", "https://gitea.example.com/org/team/app", {}, "invalid repository id"),
    ("github", "https://github.com/org/app", {"token": ""}, "github token"),
    ("github", "https://github.com/org", {}, "invalid repository id"),
    ("gitlab", "https://gitlab.com/org/app", {"token": ""}, "gitlab token"),
    ("bitbucket", "https://bitbucket.org/org/app", {"token": ""}, "bitbucket token"),
    ("bitbucket", "https://bitbucket.org/org/app", {"token": "no-colon"},
     "invalid token format"),
    ("bitbucketserver", "ssh://git@bb.example.com/scm/proj/app.git", {}, "unsupported scheme"),
    ("bitbucketserver", "https://bb.example.com/proj/app.git", {}, "provider address is not"),
    ("bitbucketserver", "https://bb.example.com/scm/proj/app.git", {"token": ""},
     "invalid credentials"),
    ("azuredevops", "https://dev.azure.com/org/proj/_git/app", {"token": ""},
     "azure devops token"),
    ("azuredevops", "https://dev.azure.com/org/proj/app", {}, "invalid repository id"),
    ("githubpullrequestcomment", "https://github.com/org/app", {"uid": ""}, "provider UID"),
    ("gitlabmergerequestcomment", "https://gitlab.com/org/app", {"uid": ""}, "provider UID"),
    ("giteapullrequestcomment", "https://gitea.example.com/org/app", {"uid": ""},
     "provider UID"),
])
def test_configurations_that_cannot_work_are_refused_when_built(
        type: str, address: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        providers.build(settings(type, address, **overrides))


def test_the_password_stands_in_for_a_missing_token() -> None:
    built = gitea.Gitea(settings("gitea", "https://gitea.example.com/org/app", token="",
                                 password="from-password"))
    assert built.headers == {"Authorization": "token from-password"}


# -- Gitea ----------------------------------------------------------------------------


def gitea_for(forge: Forge, **overrides: Any) -> tuple[Notifier, ProviderSettings]:
    provider = settings("gitea", f"{forge.url}/org/app.git", **overrides)
    return providers.build(provider), provider


GITEA_LIST = f"/api/v1/repos/org/app/commits/{SHA}/statuses"
GITEA_POST = f"/api/v1/repos/org/app/statuses/{SHA}"


@pytest.mark.parametrize("severity, reason, state, description", [
    ("info", "ReconciliationSucceeded", "success", "reconciliation succeeded"),
    ("error", "HealthCheckFailed", "failure", "health check failed"),
    ("info", "Progressing", "pending", "progressing"),
])
async def test_gitea_lists_the_commit_s_statuses_then_posts_the_event_s_state(
        forge: Forge, session: aiohttp.ClientSession, severity: str, reason: str,
        state: str, description: str) -> None:
    notifier, provider = gitea_for(forge)
    await send(notifier, event(severity, reason), session, provider)
    assert forge.calls() == [("GET", GITEA_LIST), ("POST", GITEA_POST)]
    listing, posted = forge.seen
    assert listing.query == {"limit": "50", "page": "1"}
    assert posted.headers["Authorization"] == f"token {TOKEN}"
    assert posted.headers["Content-Type"] == "application/json"
    assert posted.body == {"state": state, "target_url": "", "description": description,
                           "context": STATUS_ID}


@pytest.mark.parametrize("metadata, sha", [
    ({"commit": SHA, "originRevision": f"main@sha1:{OTHER_SHA}",
      "revision": f"main@sha1:{THIRD_SHA}"}, SHA),
    ({"originRevision": f"main@sha1:{OTHER_SHA}", "revision": f"main@sha1:{THIRD_SHA}"},
     OTHER_SHA),
    ({"revision": f"main/{THIRD_SHA}"}, THIRD_SHA),
    ({f"{KS_GROUP}/revision": f"main@sha1:{THIRD_SHA}"}, THIRD_SHA),
])
async def test_the_commit_comes_from_commit_then_origin_revision_then_revision(
        forge: Forge, session: aiohttp.ClientSession, metadata: dict[str, str],
        sha: str) -> None:
    notifier, provider = gitea_for(forge)
    await send(notifier, event(metadata=metadata), session, provider)
    assert forge.calls() == [("GET", f"/api/v1/repos/org/app/commits/{sha}/statuses"),
                             ("POST", f"/api/v1/repos/org/app/statuses/{sha}")]


async def test_gitea_posts_nothing_when_the_newest_status_of_the_context_is_the_same(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    forge.answer("GET", GITEA_LIST, 200, [
        {"id": 3, "context": "someone/else", "status": "failure", "description": "x"},
        {"id": 2, "context": STATUS_ID, "status": "success",
         "description": "reconciliation succeeded"},
        {"id": 1, "context": STATUS_ID, "status": "failure", "description": "x"},
    ])
    notifier, provider = gitea_for(forge)
    await send(notifier, event(), session, provider)
    assert forge.calls() == [("GET", GITEA_LIST)]


async def test_gitea_posts_when_only_an_older_status_of_the_context_is_the_same(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    forge.answer("GET", GITEA_LIST, 200, [
        {"id": 2, "context": STATUS_ID, "status": "failure",
         "description": "health check failed"},
        {"id": 1, "context": STATUS_ID, "status": "success",
         "description": "reconciliation succeeded"},
    ])
    notifier, provider = gitea_for(forge)
    await send(notifier, event(), session, provider)
    assert forge.calls() == [("GET", GITEA_LIST), ("POST", GITEA_POST)]


async def test_the_commit_status_expression_gives_the_context(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    notifier, provider = gitea_for(forge, commit_status="apps/production")
    await send(notifier, event(), session, provider)
    assert forge.seen[-1].body["context"] == "apps/production"


async def test_an_event_without_a_revision_is_skipped_without_a_request(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    notifier, provider = gitea_for(forge)
    await send(notifier, event("error", "BuildFailed", metadata={"summary": "x"}), session,
               provider)
    assert forge.seen == []


async def test_a_revision_without_a_commit_hash_fails_for_good(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    notifier, provider = gitea_for(forge)
    with pytest.raises(SendError, match="failed to extract commit hash") as caught:
        await send(notifier, event(metadata={"revision": "sha256:abcd"}), session, provider)
    assert not caught.value.retryable
    assert forge.seen == []


async def test_a_server_error_is_retryable_and_never_shows_the_token(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    forge.answer("POST", GITEA_POST, 503, f"token {TOKEN} is overloaded")
    notifier, provider = gitea_for(forge)
    with pytest.raises(SendError) as caught:
        await send(notifier, event(), session, provider)
    assert caught.value.retryable and caught.value.status == 503
    assert "could not create commit status" in str(caught.value)
    assert TOKEN not in str(caught.value) and "*****" in str(caught.value)


async def test_a_refused_listing_fails_for_good(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    forge.answer("GET", GITEA_LIST, 403, {"message": "token does not have scope"})
    notifier, provider = gitea_for(forge)
    with pytest.raises(SendError, match="could not list commit statuses") as caught:
        await send(notifier, event(), session, provider)
    assert not caught.value.retryable and caught.value.status == 403
    assert forge.calls() == [("GET", GITEA_LIST)]


# -- GitHub ---------------------------------------------------------------------------


def test_github_com_is_served_by_api_github_com_and_other_hosts_by_api_v3() -> None:
    assert github.api_base("https://github.com") == "https://api.github.com"
    assert github.api_base("https://ghe.example.com") == "https://ghe.example.com/api/v3"


async def test_github_posts_success_and_failure_with_a_bearer_token(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    provider = settings("github", f"{forge.url}/org/app")
    notifier = providers.build(provider)
    await send(notifier, event(), session, provider)
    await send(notifier, event("error", "HealthCheckFailed"), session, provider)
    statuses = f"/api/v3/repos/org/app/commits/{SHA}/statuses"
    post = f"/api/v3/repos/org/app/statuses/{SHA}"
    assert forge.calls() == [("GET", statuses), ("POST", post), ("GET", statuses),
                             ("POST", post)]
    assert forge.seen[0].query == {"per_page": "50"}
    assert forge.seen[1].headers["Authorization"] == f"Bearer {TOKEN}"
    assert forge.seen[1].body == {"state": "success", "context": STATUS_ID,
                                  "description": "reconciliation succeeded"}
    assert forge.seen[3].body == {"state": "failure", "context": STATUS_ID,
                                  "description": "health check failed"}


async def test_github_skips_progressing_events(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    provider = settings("github", f"{forge.url}/org/app")
    await send(providers.build(provider), event(reason="Progressing"), session, provider)
    assert forge.seen == []


async def test_github_posts_nothing_for_a_duplicate_of_the_newest_status(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    forge.answer("GET", f"/api/v3/repos/org/app/commits/{SHA}/statuses", 200, [
        {"context": STATUS_ID, "state": "success", "description": "reconciliation succeeded"}])
    provider = settings("github", f"{forge.url}/org/app")
    await send(providers.build(provider), event(), session, provider)
    assert [method for method, _ in forge.calls()] == ["GET"]


# -- GitLab ---------------------------------------------------------------------------


async def test_gitlab_escapes_the_project_path_and_sends_a_private_token(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    provider = settings("gitlab", f"{forge.url}/org/team/app.git")
    notifier = providers.build(provider)
    await send(notifier, event("error", "BuildFailed"), session, provider)
    project = "/api/v4/projects/org%2Fteam%2Fapp"
    assert forge.calls() == [("GET", f"{project}/repository/commits/{SHA}/statuses"),
                             ("POST", f"{project}/statuses/{SHA}")]
    assert forge.seen[0].query == {"name": STATUS_ID}
    assert forge.seen[1].headers["PRIVATE-TOKEN"] == TOKEN
    assert forge.seen[1].body == {"state": "failed", "name": STATUS_ID,
                                  "description": "build failed"}


async def test_gitlab_skips_progressing_and_duplicates(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    project = "/api/v4/projects/org%2Fapp"
    forge.answer("GET", f"{project}/repository/commits/{SHA}/statuses", 200, [
        {"sha": SHA, "name": STATUS_ID, "status": "success",
         "description": "reconciliation succeeded"}])
    provider = settings("gitlab", f"{forge.url}/org/app")
    notifier = providers.build(provider)
    await send(notifier, event(reason="Progressing"), session, provider)
    await send(notifier, event(), session, provider)
    assert [method for method, _ in forge.calls()] == ["GET"]


# -- Bitbucket Cloud ------------------------------------------------------------------


async def test_bitbucket_posts_a_build_status_keyed_by_the_sha1_of_the_status_id(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    key = hashlib.sha1(STATUS_ID.encode()).hexdigest()
    statuses = f"/repositories/org/app/commit/{SHA}/statuses/build"
    forge.answer("GET", f"{statuses}/{key}", 404, {"error": {"message": "not found"}})
    provider = settings("bitbucket", "https://bitbucket.org/org/app",
                        token="bot:app-password")
    notifier = bitbucket.Bitbucket(provider, api_base=forge.url)
    await send(notifier, event(), session, provider)
    assert forge.calls() == [("GET", f"{statuses}/{key}"), ("POST", statuses)]
    assert forge.seen[1].headers["Authorization"] == basic("bot", "app-password")
    assert forge.seen[1].body == {"key": key, "url": "https://bitbucket.org",
                                  "state": "SUCCESSFUL", "name": "kustomization/apps",
                                  "description": "reconciliation succeeded"}


async def test_bitbucket_skips_a_status_it_already_has_and_takes_bearer_tokens(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    key = hashlib.sha1(STATUS_ID.encode()).hexdigest()
    statuses = f"/repositories/org/app/commit/{SHA}/statuses/build"
    forge.answer("GET", f"{statuses}/{key}", 200,
                 {"key": key, "state": "FAILED", "description": "build failed"})
    provider = settings("bitbucket", "https://bitbucket.org/org/app",
                        token="x-token-auth:repo-token")
    notifier = bitbucket.Bitbucket(provider, api_base=forge.url)
    await send(notifier, event("error", "BuildFailed"), session, provider)
    await send(notifier, event(reason="Progressing"), session, provider)
    assert forge.calls() == [("GET", f"{statuses}/{key}")]
    assert forge.seen[0].headers["Authorization"] == "Bearer repo-token"


# -- Bitbucket Server / Data Center ---------------------------------------------------


async def test_bitbucket_server_reads_the_build_by_key_then_posts_it(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    key = hashlib.sha1(STATUS_ID.encode()).hexdigest()
    builds = f"/bitbucket/rest/api/latest/projects/PROJ/repos/app/commits/{SHA}/builds"
    forge.answer("GET", builds, 404, {"errors": []})
    address = f"{forge.url}/bitbucket/scm/PROJ/app.git"
    provider = settings("bitbucketserver", address, token="", username="bot",
                        password="pw")
    await send(providers.build(provider), event(), session, provider)
    assert forge.calls() == [("GET", builds), ("POST", builds)]
    assert forge.seen[0].query == {"key": key}
    posted = forge.seen[1]
    assert posted.headers["Authorization"] == basic("bot", "pw")
    assert posted.headers["x-atlassian-token"] == "no-check"
    assert posted.headers["x-requested-with"] == "XMLHttpRequest"
    assert posted.body == {"description": "reconciliation succeeded", "key": key,
                           "name": "kustomization/apps [reconciliation succeeded]",
                           "state": "SUCCESSFUL", "url": address}


async def test_bitbucket_server_posts_nothing_when_the_build_is_already_there(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    key = hashlib.sha1(STATUS_ID.encode()).hexdigest()
    builds = f"/rest/api/latest/projects/PROJ/repos/app/commits/{SHA}/builds"
    forge.answer("GET", builds, 200, {"key": key, "state": "FAILED",
                                      "description": "build failed",
                                      "name": "kustomization/apps [build failed]"})
    provider = settings("bitbucketserver", f"{forge.url}/scm/PROJ/app.git")
    await send(providers.build(provider), event("error", "BuildFailed"), session, provider)
    assert forge.calls() == [("GET", builds)]
    assert forge.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"


# -- Azure DevOps ---------------------------------------------------------------------


async def test_azure_devops_posts_with_the_genre_and_a_pat(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    statuses = f"/org/proj/_apis/git/repositories/app/commits/{SHA}/statuses"
    forge.answer("GET", statuses, 200, {"count": 1, "value": [
        {"state": "succeeded", "description": "reconciliation succeeded",
         "context": {"name": STATUS_ID, "genre": "fluxcd"}}]})
    provider = settings("azuredevops", f"{forge.url}/org/proj/_git/app")
    notifier = providers.build(provider)
    # the same status under the plain genre is there; the summary makes another genre
    await send(notifier, event(metadata={"revision": f"main@sha1:{SHA}",
                                         "summary": "prod"}), session, provider)
    assert forge.calls() == [("GET", statuses), ("POST", statuses)]
    assert forge.seen[0].query == {"api-version": "6.0"}
    assert forge.seen[1].headers["Authorization"] == basic("", TOKEN)
    assert forge.seen[1].body == {"state": "succeeded",
                                  "description": "reconciliation succeeded",
                                  "context": {"name": STATUS_ID, "genre": "fluxcd:prod"}}
    await send(notifier, event(), session, provider)
    assert len(forge.seen) == 3  # a duplicate under the plain genre: listed, not posted


# -- change-request comments ----------------------------------------------------------


@dataclass
class Thread:
    """A change request's comments as the forge keeps them: listed, created, edited."""

    listing: str
    edit_prefix: str
    author: tuple[str, str]
    me: str
    comments: list[dict[str, Any]] = field(default_factory=list)

    def writer(self, login: str) -> dict[str, Any]:
        return {self.author[0]: {self.author[1]: login}}

    def handle(self, seen: Seen) -> tuple[int, Any] | None:
        if seen.path == self.listing and seen.method == "GET":
            return 200, self.comments
        if seen.path == self.listing and seen.method == "POST":
            comment = {"id": 100 + len(self.comments), "body": seen.body["body"],
                       **self.writer(self.me)}
            self.comments.append(comment)
            return 201, comment
        if seen.path.startswith(self.edit_prefix) and seen.method in ("PATCH", "PUT"):
            number = int(seen.path.rsplit("/", 1)[1])
            for comment in self.comments:
                if comment["id"] == number:
                    comment["body"] = seen.body["body"]
                    return 200, comment
            return 404, {"message": "no such comment"}
        if seen.path.endswith("/user") and seen.method == "GET":
            return 200, {self.author[1]: self.me}
        return None


COMMENT_CASES = {
    "githubpullrequestcomment": ("/api/v3/repos/org/app/issues/42/comments",
                                 "/api/v3/repos/org/app/issues/comments/", ("user", "login"),
                                 "PATCH", "flux-pr-comment-key", f"Bearer {TOKEN}",
                                 "Authorization"),
    "giteapullrequestcomment": ("/api/v1/repos/org/app/issues/42/comments",
                                "/api/v1/repos/org/app/issues/comments/", ("user", "login"),
                                "PATCH", "flux-pr-comment-key", f"token {TOKEN}",
                                "Authorization"),
    "gitlabmergerequestcomment": ("/api/v4/projects/org%2Fapp/merge_requests/42/notes",
                                  "/api/v4/projects/org%2Fapp/merge_requests/42/notes/",
                                  ("author", "username"), "PUT", "flux-mr-comment-key",
                                  TOKEN, "PRIVATE-TOKEN"),
}


@pytest.mark.parametrize("type", sorted(COMMENT_CASES))
async def test_a_comment_provider_creates_one_comment_then_updates_it(
        forge: Forge, session: aiohttp.ClientSession, type: str) -> None:
    listing, edit_prefix, author, edit, prefix, auth, header = COMMENT_CASES[type]
    thread = Thread(listing, edit_prefix, author, me="flux-bot")
    marker = f"<!-- {prefix}:{UID}/Kustomization/flux-system/apps -->"
    # someone else quoting the marker does not own the comment
    thread.comments.append({"id": 7, "body": f"see {marker}", **thread.writer("alice")})
    forge.handler = thread.handle
    provider = settings(type, f"{forge.url}/org/app")
    notifier = providers.build(provider)
    metadata = {"revision": f"main@sha1:{SHA}", "change_request": "42"}
    await send(notifier, event(metadata=metadata, message="Applied revision"), session,
               provider)
    await send(notifier, event("error", "HealthCheckFailed", metadata=metadata,
                               message="Health check failed"), session, provider)
    methods = [(seen.method, seen.path) for seen in forge.seen]
    assert methods == [("GET", methods[0][1]), ("GET", listing), ("POST", listing),
                       ("GET", listing), (edit, f"{edit_prefix}101")]
    assert methods[0][1].endswith("/user")
    assert all(seen.headers[header] == auth for seen in forge.seen)
    assert [comment["id"] for comment in thread.comments] == [7, 101]
    created, edited = forge.seen[2].body["body"], thread.comments[1]["body"]
    assert created == (f"{marker}\n\n## Flux Status\n\n\u2139\ufe0f Kustomization/flux-system/"
                       f"apps\n\nApplied revision\n\nMetadata:\n"
                       f"* `revision`: main@sha1:{SHA}\n")
    assert edited.startswith(f"{marker}\n\n## Flux Status\n\n\u26a0\ufe0f ")
    assert "Health check failed" in edited and "change_request" not in edited


@pytest.mark.parametrize("type, query", [
    ("githubpullrequestcomment", {"direction": "asc", "per_page": "100", "sort": "created"}),
    ("giteapullrequestcomment", {"limit": "100", "page": "1"}),
    ("gitlabmergerequestcomment", {"order_by": "created_at", "per_page": "100",
                                   "sort": "asc"}),
])
async def test_comment_providers_read_the_first_hundred_comments_oldest_first(
        forge: Forge, session: aiohttp.ClientSession, type: str,
        query: dict[str, str]) -> None:
    listing, edit_prefix, author, *_ = COMMENT_CASES[type]
    forge.handler = Thread(listing, edit_prefix, author, me="flux-bot").handle
    provider = settings(type, f"{forge.url}/org/app")
    await send(providers.build(provider), event(metadata={"change_request": "42"}), session,
               provider)
    assert forge.seen[1].path == listing and forge.seen[1].query == query


@pytest.mark.parametrize("metadata, message", [
    ({}, 'missing "change_request" metadata key'),
    ({"change_request": "abc"}, 'invalid "change_request" metadata value "abc"'),
])
async def test_a_comment_needs_a_change_request_number(
        forge: Forge, session: aiohttp.ClientSession, metadata: dict[str, str],
        message: str) -> None:
    provider = settings("githubpullrequestcomment", f"{forge.url}/org/app")
    with pytest.raises(SendError, match=message) as caught:
        await send(providers.build(provider), event(metadata=metadata), session, provider)
    assert not caught.value.retryable
    assert forge.seen == []


async def test_the_token_s_user_is_asked_for_once_per_notifier(
        forge: Forge, session: aiohttp.ClientSession) -> None:
    listing, edit_prefix, author, *_ = COMMENT_CASES["gitlabmergerequestcomment"]
    forge.handler = Thread(listing, edit_prefix, author, me="flux-bot").handle
    provider = settings("gitlabmergerequestcomment", f"{forge.url}/org/app")
    notifier = gitlabmergerequestcomment.GitLabMergeRequestComment(provider)
    ev = event(metadata={"change_request": "42"})
    await send(notifier, ev, session, provider)
    await send(notifier, replace(ev, message="again"), session, provider)
    assert [path for _, path in forge.calls()].count("/api/v4/user") == 1
