"""The alerting Provider types (chat, incident and webhook services): type → factory.

Not here (Flux has them): ``googlepubsub``, ``azureeventhub``, ``nats``, ``otel``,
``zoom`` and ``incident.io``.
"""

from __future__ import annotations

from collections.abc import Callable

from fluxd.controllers.notification.notifier import Notifier, ProviderSettings
from fluxd.controllers.notification.providers import (
    alertmanager,
    datadog,
    discord,
    generic,
    githubdispatch,
    googlechat,
    grafana,
    lark,
    matrix,
    msteams,
    opsgenie,
    pagerduty,
    rocket,
    sentry,
    slack,
    telegram,
    webex,
    zulip,
)

FACTORIES: dict[str, Callable[[ProviderSettings], Notifier]] = {
    "generic": generic.notifier,
    "generic-hmac": generic.notifier,
    "slack": slack.notifier,
    "msteams": msteams.notifier,
    "discord": discord.notifier,
    "rocket": rocket.notifier,
    "googlechat": googlechat.notifier,
    "webex": webex.notifier,
    "telegram": telegram.notifier,
    "matrix": matrix.notifier,
    "lark": lark.notifier,
    "zulip": zulip.notifier,
    "alertmanager": alertmanager.notifier,
    "grafana": grafana.notifier,
    "opsgenie": opsgenie.notifier,
    "pagerduty": pagerduty.notifier,
    "datadog": datadog.notifier,
    "sentry": sentry.notifier,
    "githubdispatch": githubdispatch.notifier,
}
