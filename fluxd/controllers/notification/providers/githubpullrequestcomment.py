"""GitHub pull request comments (Provider type ``githubpullrequestcomment``), as Flux's
``internal/notifier/github_pull_request_comment.go``.

Address and token as for ``github``. The event's ``change_request`` metadata names the
pull request. One comment per object and Provider is kept up to date: the first 100
comments (oldest first) are read, and the one written by the token's user (``GET
/user``) that holds the marker ``<!-- flux-pr-comment-key:<uid>/<Kind>/<ns>/<name> -->``
is edited (``PATCH /repos/{owner}/{repo}/issues/comments/{id}``); without one, a comment
is created (``POST /repos/{owner}/{repo}/issues/{number}/comments``).
"""

from __future__ import annotations

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers import gitcommon, github
from fluxd.runtime.events import Event

MARKER_PREFIX = "flux-pr-comment-key"
COMMENT_PAGE = 100


class PullRequestComments:
    """Keeps one comment per object on pull requests of a GitHub-shaped API (GitHub's,
    and Gitea's, which follows it): ``api`` and ``headers`` as the forge wants them,
    ``list_query`` the query that lists an issue's comments."""

    def __init__(self, settings: ProviderSettings, *, api: str, owner: str, repo: str,
                 headers: dict[str, str], list_query: str) -> None:
        if not settings.uid:
            raise ConfigError("provider UID cannot be empty")
        self.settings = settings
        self.api, self.headers, self.list_query = api, headers, list_query
        self.repository = (f"{api}/repos/{gitcommon.segment(owner)}/"
                           f"{gitcommon.segment(repo)}")
        self._login: str | None = None

    async def post(self, event: Event, client: HTTPClient) -> None:
        body = gitcommon.comment_body(MARKER_PREFIX, self.settings.uid, event)
        number = gitcommon.change_request(event)
        if self._login is None:
            self._login = await gitcommon.authenticated_user(
                client, f"{self.api}/user", "login", self.headers)
        step = "failed to list pull request comments"
        listing = await gitcommon.call(
            client, step, "GET", f"{self.repository}/issues/{number}/comments?"
            f"{self.list_query}", headers=self.headers)
        found = gitcommon.find_comment(
            gitcommon.read_list(listing, step), author=("user", "login"), login=self._login,
            marker=gitcommon.comment_marker(MARKER_PREFIX, self.settings.uid, event))
        if found is not None:
            await gitcommon.call(client, "failed to update pull request comment", "PATCH",
                                 f"{self.repository}/issues/comments/{found}",
                                 json_body={"body": body}, headers=self.headers)
        else:
            await gitcommon.call(client, "failed to create pull request comment", "POST",
                                 f"{self.repository}/issues/{number}/comments",
                                 json_body={"body": body}, headers=self.headers)


def notifier(settings: ProviderSettings) -> Notifier:
    api, owner, repo, headers = github.repository_settings(settings)
    return PullRequestComments(settings, api=api, owner=owner, repo=repo, headers=headers,
                               list_query=f"direction=asc&per_page={COMMENT_PAGE}"
                                          "&sort=created")
