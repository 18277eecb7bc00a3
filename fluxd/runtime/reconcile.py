"""The reconcile contract shared by every controller.

A reconciler is level-based: it gets an ``ObjectKey``, reads the object's current state
and converges. It returns a ``Result`` (optionally asking to run again after a delay) or
raises one of three errors that say what should happen next:

- ``ReconcileError``: something failed that may work later; retry with per-item
  exponential backoff.
- ``WaitingError(requeue_after)``: not a failure — a dependency is not ready yet; retry
  after the given delay, without growing the backoff.
- ``StallingError``: retrying cannot help (invalid spec, access denied); do not retry
  until the object changes.

Every error carries a Flux ``reason`` (``meta`` vocabulary) for conditions and events.
``runtime/controller.py`` is the one place that turns these into queue actions and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ObjectKey:
    """The queue item: one object of one kind. ``namespace`` is "" for cluster scope."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else \
            f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Result:
    """A successful reconcile; ``requeue_after`` (seconds) schedules the next run."""

    requeue_after: float | None = None


class ReconcileError(Exception):
    """A failure worth retrying with backoff."""

    def __init__(self, message: str, *, reason: str = "ReconciliationFailed") -> None:
        super().__init__(message)
        self.reason = reason


class WaitingError(ReconcileError):
    """Not ready yet: retry after ``requeue_after`` seconds, no backoff growth."""

    def __init__(self, message: str, *, requeue_after: float,
                 reason: str = "DependencyNotReady") -> None:
        super().__init__(message, reason=reason)
        self.requeue_after = requeue_after


class StallingError(ReconcileError):
    """Retrying cannot help until the object changes."""
