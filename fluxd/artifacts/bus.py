"""The artifact bus: sources announce new artifacts to in-process consumers.

Contract:

* :meth:`ArtifactBus.publish` is synchronous and never waits. Each subscriber's callback
  is called in the publisher's stack, in subscription order, and every subscriber sees
  events in publish order, even when a callback publishes in turn (that event is
  delivered after the current one has reached everyone).
* Callbacks must not block or await anything: they are expected to enqueue keys into
  the work queue and return. An exception from a callback is logged and does not stop
  delivery to the others.
* :meth:`ArtifactBus.last` gives the latest event per source, so a consumer that starts
  (or subscribes) late can catch up; :meth:`ArtifactBus.forget` drops it when the source
  is deleted.
* Publish from the event loop's thread only; the bus holds no lock.

The bus is an object the application builds and hands around; there is no module state.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ArtifactBus", "ArtifactEvent", "SourceKey", "Subscriber"]

log = logging.getLogger("fluxd.artifacts.bus")


@dataclass(frozen=True, order=True)
class SourceKey:
    """Which source produced an artifact (``kind`` as in the API, e.g. ``GitRepository``)."""

    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class ArtifactEvent:
    """A source stored a new artifact at ``path`` (local file) served at ``url``."""

    source: SourceKey
    revision: str
    digest: str
    path: Path
    url: str
    #: the artifact's metadata (e.g. OCI annotations such as the origin revision)
    metadata: Mapping[str, str] = field(default_factory=dict)


Subscriber = Callable[[ArtifactEvent], None]


class ArtifactBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._last: dict[SourceKey, ArtifactEvent] = {}
        self._pending: deque[ArtifactEvent] = deque()
        self._delivering = False

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for every event published from now on; returns an unsubscriber."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, event: ArtifactEvent) -> None:
        self._last[event.source] = event
        self._pending.append(event)
        if self._delivering:
            return  # the outer publish delivers it, after the event in flight
        self._delivering = True
        try:
            while self._pending:
                current = self._pending.popleft()
                for callback in list(self._subscribers):
                    try:
                        callback(current)
                    except Exception:
                        log.exception("artifact subscriber failed",
                                      extra={"source": current.source,
                                             "revision": current.revision})
        finally:
            self._delivering = False

    def last(self, source: SourceKey) -> ArtifactEvent | None:
        return self._last.get(source)

    def forget(self, source: SourceKey) -> None:
        self._last.pop(source, None)
