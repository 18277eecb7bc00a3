"""The reconcile contract shared by every controller.

A reconciler is level-based: it gets an ``ObjectKey``, reads the object's current state
and converges. It returns a ``Result`` (optionally asking to run again after a delay) or
raises one of four errors that say what should happen next:

- ``ReconcileError``: something failed that may work later; retry with per-item
  exponential backoff.
- ``RetryError(requeue_after)``: a failure, retried at a fixed interval without backoff
  growth (Flux's ``retryInterval``).
- ``WaitingError(requeue_after)``: not a failure — a dependency is not ready yet; retry
  after the given delay, without growing the backoff.
- ``StallingError``: retrying cannot help (invalid spec, access denied); do not retry
  until the object changes.

Every error carries a Flux ``reason`` (``meta`` vocabulary) for conditions and events,
and may name the negative-polarity ``condition`` the failing step marks (``FetchFailed``,
``IncludeUnavailable``…). ``requeue_after`` may be left to the driver, which fills in the
object's own retry interval. ``runtime/controller.py`` is the one place that turns these
into queue actions and metrics; ``runtime/driver.py`` the one place that turns them into
conditions.
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

    def __init__(self, message: str, *, reason: str = "ReconciliationFailed",
                 condition: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        #: the negative-polarity condition the failing step marks True (besides Ready)
        self.condition = condition


class RetryError(ReconcileError):
    """A failure retried after ``requeue_after`` seconds, with no backoff growth; None
    leaves the interval to the driver (the object's retry interval)."""

    def __init__(self, message: str, *, reason: str = "ReconciliationFailed",
                 requeue_after: float | None = None, condition: str | None = None) -> None:
        super().__init__(message, reason=reason, condition=condition)
        self.requeue_after = requeue_after


class WaitingError(RetryError):
    """Not ready yet, and not a failure: retry after ``requeue_after`` seconds (None: the
    driver's choice), no backoff growth. Its event is a Warning when ``warn``, else a
    trace event (seen by the notification controller's log, not on the object)."""

    def __init__(self, message: str, *, requeue_after: float | None = None,
                 reason: str = "DependencyNotReady", condition: str | None = None,
                 warn: bool = False) -> None:
        super().__init__(message, reason=reason, requeue_after=requeue_after,
                         condition=condition)
        self.warn = warn


class StallingError(ReconcileError):
    """Retrying cannot help until the object changes."""
