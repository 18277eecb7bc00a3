"""The reconcile loop of one kind: workers take keys from the shared queue, reconcile,
and hand the outcome to ``handle_outcome`` — the one place where outcomes become queue
actions and metrics.

| outcome                              | queue                          | metrics result        |
|--------------------------------------|--------------------------------|-----------------------|
| ``Result()``                         | forget                         | success               |
| ``Result(requeue_after=t)``          | forget, add_after(t ± jitter)  | requeue_after         |
| ``WaitingError(requeue_after=t)``    | forget, add_after(t)           | requeue_after         |
| ``RetryError(requeue_after=t)``      | forget, add_after(t)           | error                 |
| ``StallingError``                    | forget (no retry)              | error (terminal)      |
| ``ReconcileError``                   | add_rate_limited (backoff)     | error                 |
| timeout (per-reconcile deadline)     | add_rate_limited               | error (timeout)       |
| any other exception (a bug)          | add_rate_limited, traceback    | error (panic)         |

A bug in one reconcile is logged with its traceback and retried; it never ends the
process. Errors retried with backoff are logged here ("Reconciler error", as
controller-runtime does); a retry at a fixed interval, a wait and a stall were reported
by the reconciler's driver, as Flux's reconcilers do before returning no error. Each
reconcile runs under a ``reconcileID`` bound into every log line it writes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fluxd import logging as fluxlog
from fluxd.clock import Clock
from fluxd.metrics import Outcome
from fluxd.runtime.reconcile import (
    ObjectKey,
    ReconcileError,
    Result,
    RetryError,
    StallingError,
    WaitingError,
)
from fluxd.runtime.workqueue import WorkQueue

log = logging.getLogger("fluxd.controller")


class ReconcileTimeout(ReconcileError):
    """The reconcile ran past its deadline and was cancelled."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="ReconciliationFailed")


class Reconciler(Protocol):
    async def reconcile(self, key: ObjectKey) -> Result: ...


class ControllerMetrics(Protocol):
    def controller_started(self, controller: str, *, max_concurrent: int) -> None: ...

    def reconcile_started(self, controller: str) -> None: ...

    def reconcile_finished(self, controller: str, outcome: Outcome | str, seconds: float, *,
                           kind: str | None, name: str = "", namespace: str = "") -> None: ...

    def object_deleted(self, kind: str, name: str, namespace: str) -> None: ...


@dataclass
class Tuning:
    """Settings that may change while running (hot configuration reload)."""

    #: per-reconcile deadline, seconds
    timeout: float = 600.0
    #: ± percentage applied to successful requeue intervals (Flux default 5)
    jitter_percent: float = 5.0


def jittered(seconds: float, percent: float, rng: random.Random) -> float:
    """``seconds`` moved uniformly within ±``percent`` %."""
    if percent <= 0:
        return seconds
    spread = seconds * percent / 100.0
    return seconds + rng.uniform(-spread, spread)


def handle_outcome(queue: WorkQueue, key: ObjectKey, result: Result | None,
                   error: BaseException | None, *, tuning: Tuning,
                   rng: random.Random) -> Outcome:
    """Turn how a reconcile ended into queue actions; return the metrics outcome."""
    if error is None:
        queue.forget(key)
        if result is not None and result.requeue_after is not None:
            queue.add_after(key, jittered(result.requeue_after, tuning.jitter_percent, rng))
            return Outcome.REQUEUE_AFTER
        return Outcome.SUCCESS
    if isinstance(error, RetryError) and error.requeue_after is not None:
        queue.forget(key)
        queue.add_after(key, error.requeue_after)
        return Outcome.REQUEUE_AFTER if isinstance(error, WaitingError) else Outcome.ERROR
    if isinstance(error, StallingError):
        queue.forget(key)
        return Outcome.TERMINAL_ERROR
    queue.add_rate_limited(key)
    if isinstance(error, ReconcileTimeout):
        return Outcome.TIMEOUT
    if isinstance(error, ReconcileError):
        return Outcome.ERROR
    return Outcome.PANIC


class Controller:
    def __init__(self, *, kind: str, reconciler: Reconciler, queue: WorkQueue,
                 metrics: ControllerMetrics, clock: Clock, tuning: Tuning | None = None,
                 rng: random.Random | None = None,
                 exists: Callable[[ObjectKey], bool] | None = None,
                 group: str = "") -> None:
        """``exists`` says whether the object is still in the cache after a reconcile:
        when it is gone, its per-object metric series are dropped (as Flux does) instead
        of being recorded again."""
        self.kind = kind
        #: the kind's API group, for the log context (``controllerGroup``)
        self.group = group
        self._exists = exists
        self.name = kind.lower()
        self._reconciler = reconciler
        self._queue = queue
        self._metrics = metrics
        self._clock = clock
        self.tuning = tuning or Tuning()
        self._rng = rng or random.Random()
        self._workers = 0
        self._group: asyncio.TaskGroup | None = None

    async def run(self) -> None:
        """Run workers until the queue shuts down (then in-flight reconciles finish)."""
        limit = self._queue.kind_limit(self.kind)
        self._metrics.controller_started(self.name, max_concurrent=limit)
        async with asyncio.TaskGroup() as group:
            self._group = group
            self.ensure_workers(limit)
        self._group = None

    def ensure_workers(self, count: int) -> None:
        """Have at least ``count`` workers (the queue's per-kind limit caps how many work
        at once, so lowering the limit needs no worker to stop)."""
        if self._group is None:
            return
        while self._workers < count:
            self._workers += 1
            self._group.create_task(self._worker(), name=f"{self.name}-worker-{self._workers}")

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get(self.kind)
            if key is None:
                return
            try:
                await self.process(key)
            finally:
                self._queue.done(key)

    @property
    def reconciler(self) -> Reconciler:
        """What this controller runs for each key."""
        return self._reconciler

    async def process(self, key: ObjectKey) -> Outcome:
        """Reconcile one key and act on the outcome."""
        reconcile_id = str(uuid.uuid4())
        # controller-runtime's reconcile context, in its order
        with fluxlog.bind(controller=self.name, controllerGroup=self.group,
                          controllerKind=self.kind,
                          **{self.kind: {"name": key.name, "namespace": key.namespace}},
                          namespace=key.namespace, name=key.name,
                          reconcileID=reconcile_id):
            self._metrics.reconcile_started(self.name)
            started = self._clock.monotonic()
            result: Result | None = None
            error: BaseException | None = None
            deadline = self._clock.timeout(self.tuning.timeout)
            try:
                async with deadline:
                    result = await self._reconciler.reconcile(key)
            except asyncio.CancelledError:
                self._metrics.reconcile_finished(self.name, Outcome.ERROR,
                                                 self._clock.monotonic() - started, kind=None)
                raise
            except Exception as exc:  # a bug in one reconcile must not end the process
                error = exc
            if error is not None and deadline.expired():
                error = ReconcileTimeout(f"reconcile timed out after {self.tuning.timeout:g}s")
            outcome = handle_outcome(self._queue, key, result, error, tuning=self.tuning,
                                     rng=self._rng)
            elapsed = self._clock.monotonic() - started
            if outcome is Outcome.PANIC:
                assert error is not None
                log.error("Reconciler error", exc_info=error, extra=fluxlog.fields(
                    with_stacktrace=True, error=f"{type(error).__name__}: {error}"))
            elif outcome in (Outcome.ERROR, Outcome.TIMEOUT) and not (
                    isinstance(error, RetryError) and error.requeue_after is not None):
                log.error("Reconciler error", extra=fluxlog.fields(error=str(error)))
            if self._exists is not None and not self._exists(key):
                self._metrics.reconcile_finished(self.name, outcome, elapsed, kind=None)
                self._metrics.object_deleted(self.kind, key.name, key.namespace)
            else:
                self._metrics.reconcile_finished(self.name, outcome, elapsed, kind=self.kind,
                                                 name=key.name, namespace=key.namespace)
            return outcome
