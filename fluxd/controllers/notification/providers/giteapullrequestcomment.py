"""Gitea pull request comments (Provider type ``giteapullrequestcomment``), as Flux's
``internal/notifier/gitea_pull_request_comment.go``.

Address and token as for ``gitea``. The event's ``change_request`` metadata names the
pull request. One comment per object and Provider is kept up to date: the first 100
comments are read, and the one written by the token's user (``GET /user``) that holds
the marker ``<!-- flux-pr-comment-key:<uid>/<Kind>/<ns>/<name> -->`` is edited
(``PATCH /repos/{owner}/{repo}/issues/comments/{id}``); without one, a comment is
created (``POST /repos/{owner}/{repo}/issues/{number}/comments``).
"""

from __future__ import annotations

from fluxd.controllers.notification.notifier import Notifier, ProviderSettings
from fluxd.controllers.notification.providers import gitea
from fluxd.controllers.notification.providers.githubpullrequestcomment import (
    COMMENT_PAGE,
    PullRequestComments,
)


def notifier(settings: ProviderSettings) -> Notifier:
    # Gitea's API follows GitHub's; only the base, the auth header and paging differ
    api, owner, repo, token = gitea.repository_settings(settings, "gitea")
    return PullRequestComments(settings, api=api, owner=owner, repo=repo,
                               headers={"Authorization": f"token {token}"},
                               list_query=f"limit={COMMENT_PAGE}&page=1")
