"""One module per Provider type; ``build`` picks the Notifier for a Provider's type."""

from __future__ import annotations

from collections.abc import Callable

from fluxd.controllers.notification.notifier import ConfigError, Notifier, ProviderSettings

Factory = Callable[[ProviderSettings], Notifier]


def _factories() -> dict[str, Factory]:
    from fluxd.controllers.notification.providers import chat_types, git_types

    return {**chat_types.FACTORIES, **git_types.FACTORIES}


def supported() -> frozenset[str]:
    """The Provider types fluxd can send to."""
    return frozenset(_factories())


def build(settings: ProviderSettings) -> Notifier:
    """The Notifier for ``settings.type``; ``ConfigError`` when the type is not supported
    by fluxd or the configuration cannot work."""
    factory = _factories().get(settings.type)
    if factory is None:
        raise ConfigError(f"provider type {settings.type!r} is not supported by fluxd")
    return factory(settings)
