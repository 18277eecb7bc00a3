"""GitLab merge request comments (Provider type ``gitlabmergerequestcomment``), as Flux's
``internal/notifier/gitlab_merge_request_comment.go``.

Address and token as for ``gitlab``. The event's ``change_request`` metadata is the
merge request IID. One note per object and Provider is kept up to date: the first 100
notes (oldest first) are read, and the one written by the token's user (``GET /user``)
that holds the marker ``<!-- flux-mr-comment-key:<uid>/<Kind>/<ns>/<name> -->`` is
edited (``PUT /projects/{id}/merge_requests/{iid}/notes/{note}``); without one, a note
is created (``POST /projects/{id}/merge_requests/{iid}/notes``).
"""

from __future__ import annotations

from fluxd.controllers.notification.notifier import (
    ConfigError,
    HTTPClient,
    Notifier,
    ProviderSettings,
)
from fluxd.controllers.notification.providers import gitcommon, gitlab
from fluxd.runtime.events import Event

MARKER_PREFIX = "flux-mr-comment-key"
NOTE_PAGE = 100


class GitLabMergeRequestComment:
    """Keeps one note per object on GitLab merge requests."""

    def __init__(self, settings: ProviderSettings) -> None:
        if not settings.uid:
            raise ConfigError("provider UID cannot be empty")
        self.settings = settings
        self.api, self.project, self.headers = gitlab.project_settings(settings)
        self._login: str | None = None

    async def post(self, event: Event, client: HTTPClient) -> None:
        body = gitcommon.comment_body(MARKER_PREFIX, self.settings.uid, event)
        iid = gitcommon.change_request(event)
        if self._login is None:
            self._login = await gitcommon.authenticated_user(
                client, f"{self.api}/user", "username", self.headers)
        notes = f"{self.project}/merge_requests/{iid}/notes"
        step = "failed to list merge request notes"
        listing = await gitcommon.call(
            client, step, "GET",
            f"{notes}?order_by=created_at&per_page={NOTE_PAGE}&sort=asc",
            headers=self.headers)
        found = gitcommon.find_comment(
            gitcommon.read_list(listing, step), author=("author", "username"),
            login=self._login,
            marker=gitcommon.comment_marker(MARKER_PREFIX, self.settings.uid, event))
        if found is not None:
            await gitcommon.call(client, "failed to update merge request note", "PUT",
                                 f"{notes}/{found}", json_body={"body": body},
                                 headers=self.headers)
        else:
            await gitcommon.call(client, "failed to create merge request note", "POST", notes,
                                 json_body={"body": body}, headers=self.headers)


def notifier(settings: ProviderSettings) -> Notifier:
    return GitLabMergeRequestComment(settings)
