"""The Git Provider types (commit statuses, change-request comments): type → factory."""

from __future__ import annotations

from collections.abc import Callable

from fluxd.controllers.notification.notifier import Notifier, ProviderSettings
from fluxd.controllers.notification.providers import (
    azuredevops,
    bitbucket,
    bitbucketserver,
    gitea,
    giteapullrequestcomment,
    github,
    githubpullrequestcomment,
    gitlab,
    gitlabmergerequestcomment,
)

FACTORIES: dict[str, Callable[[ProviderSettings], Notifier]] = {
    "github": github.notifier,
    "gitlab": gitlab.notifier,
    "gitea": gitea.notifier,
    "bitbucketserver": bitbucketserver.notifier,
    "bitbucket": bitbucket.notifier,
    "azuredevops": azuredevops.notifier,
    "githubpullrequestcomment": githubpullrequestcomment.notifier,
    "gitlabmergerequestcomment": gitlabmergerequestcomment.notifier,
    "giteapullrequestcomment": giteapullrequestcomment.notifier,
}
