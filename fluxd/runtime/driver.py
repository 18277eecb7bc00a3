"""The one reconcile driver every controller's reconcilers run on (Flux's reconcile shape).

    fetch from the cache ── gone? ``forget`` ── parse the spec into the kind's model
      (once; defaults live there) ── ``intercept``ed? stop ── deleting? ``cleanup``,
      drop the finalizer → ensure the finalizer → a spec the model refused? stalled →
      suspended? stop → the kind's **ordered steps**, each ``step(run)`` → always,
      shielded: summarise Ready/Reconciling/Stalled, observe the generation, patch the
      status → ``report`` (events, the log line) → a Result, or the error.

A kind subclasses ``Driver`` and contributes: ``API_VERSION``/``KIND``/``SPEC`` (the
pydantic model of its spec), ``OWNED`` (the condition types it writes), ``RUN`` (its
``Run`` subclass, holding what its steps hand each other; ``run_fields`` fills what is
known at the start), ``steps`` (the ordered list) and, when it needs them,
``intercept``/``forget``/``cleanup``/``summarize``/``report`` hooks. Steps
share one signature, ``async def step(run) -> Result | None``: None goes on to the next
step, a Result ends the list there as a success (a health check still progressing), and an
error from ``fluxd.runtime.reconcile`` ends it as a failure:

| raised                     | conditions (besides the step's own ``condition``) | queue       |
|----------------------------|---------------------------------------------------|-------------|
| ``ReconcileError``         | Ready=False reason/message                        | backoff     |
| ``RetryError``             | Ready=False reason/message                        | retry after |
| ``WaitingError``           | Ready=False reason/message                        | retry after |
| ``StallingError``          | Ready=False and Stalled=True, Reconciling dropped | none        |
| any other exception (bug)  | Ready=False ``ReconciliationFailed``, its text    | backoff     |
| cancelled (deadline, stop) | Ready=False ``ReconciliationFailed``, interrupted | backoff     |

Whatever happens, the summary runs and the status is written: a reconcile never leaves
"in progress" behind. A ``requeue_after`` left None is the object's retry interval.
Two summary styles exist in Flux and both are here: the source-controller's
(``summarize_conditions``: Ready computed from the owned conditions, negative polarity
first) and the kustomize/helm/notification controllers' (``finalize_status``: the steps
set Ready; Reconciling becomes ``ProgressingWithRetry`` after a failure).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from fluxd import logging as fluxlog
from fluxd.clock import Clock, format_duration
from fluxd.config import parse_duration
from fluxd.kube.errors import NotFound
from fluxd.runtime import conditions as cond
from fluxd.runtime.reconcile import (
    ObjectKey,
    ReconcileError,
    Result,
    RetryError,
    StallingError,
    WaitingError,
)
from fluxd.runtime.status import StatusClient, StatusPatcher

log = logging.getLogger("fluxd.reconcile")

Obj = dict[str, Any]

#: Flux's finalizer on every object it reconciles
FINALIZER = "finalizers.fluxcd.io"
#: Flux's reason for a failure no step named (``meta.ReconciliationFailedReason``)
RECONCILIATION_FAILED = "ReconciliationFailed"
#: the reason of an invalid spec (``meta.InvalidSpecReason`` is not used by Flux for a
#: spec the API server accepted; this one says what happened)
VALIDATION_FAILED = "ValidationFailed"
INTERRUPTED = "reconciliation was interrupted before it finished"

EventType = Literal["Normal", "Warning"]


class DriverClient(StatusClient, Protocol):
    """What the driver needs of ``fluxd.kube.KubeClient``."""

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: Obj,
                          namespace: str | None = None) -> Obj: ...


class ObjectSource(Protocol):
    """Where the driver reads the object (an informer)."""

    def get(self, namespace: str, name: str) -> Obj | None: ...


class EventSink(Protocol):
    """What the driver needs of ``fluxd.runtime.events.EventRecorder``."""

    async def event(self, obj: Mapping[str, Any], *, type: EventType = "Normal",
                    reason: str, message: str, metadata: Mapping[str, str] | None = None,
                    trace: bool = False, notify_only: bool = False) -> None: ...


SpecT = TypeVar("SpecT", bound=BaseModel)


@dataclass
class Run(Generic[SpecT]):
    """One reconcile as its steps see it. Kinds subclass it for what their steps hand
    each other (Flux passes such values as the step functions' extra arguments)."""

    key: ObjectKey
    obj: Obj
    spec: SpecT
    patcher: StatusPatcher
    #: monotonic time the reconcile started
    started: float
    #: the object was Ready when the reconcile began
    was_ready: bool
    #: ``spec.interval`` in seconds: the successful requeue
    interval: float
    #: the failed requeue (``retryInterval`` where the kind has one)
    retry_interval: float
    #: what the steps opened for the length of the reconcile (a temporary directory),
    #: closed by the driver once the steps are over, whatever happened
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


RunT = TypeVar("RunT", bound=Run[Any])
Step = Callable[[RunT], Awaitable[Result | None]]


@dataclass
class Failure:
    """How a reconcile failed, as the summary and the report see it."""

    error: BaseException
    reason: str
    message: str
    #: a bug (an exception outside the reconcile vocabulary) or an interruption
    unexpected: bool = False

    @property
    def stalled(self) -> bool:
        return isinstance(self.error, StallingError)

    @property
    def waiting(self) -> bool:
        return isinstance(self.error, WaitingError)


@dataclass
class Driver(Generic[SpecT, RunT]):
    """The driver (see the module docstring). Subclasses set the ClassVars and ``steps``."""

    API_VERSION: ClassVar[str]
    KIND: ClassVar[str]
    SPEC: ClassVar[type[BaseModel]]
    #: condition types this kind writes (others' conditions are kept)
    OWNED: ClassVar[tuple[str, ...]]
    #: default ``spec.interval`` when the model has none
    DEFAULT_INTERVAL: ClassVar[str] = "10m"
    #: the info line of a suspended object (Flux's controllers differ in case)
    SUSPENDED: ClassVar[str] = "Reconciliation is suspended for this object"
    #: the kind's ``Run`` (a subclass holding what its steps hand each other)
    RUN: ClassVar[type[Run[Any]]] = Run

    client: DriverClient
    informer: ObjectSource
    recorder: EventSink
    clock: Clock
    #: the logger of the kind's controller
    logger: logging.Logger = field(default=log, kw_only=True)

    # --- what a kind provides -------------------------------------------------------

    def steps(self) -> Sequence[Step[RunT]]:
        raise NotImplementedError

    def begin(self, key: ObjectKey, obj: Obj, spec: SpecT, patcher: StatusPatcher, *,
              started: float, was_ready: bool) -> RunT:
        """The kind's ``RUN`` for this reconcile, with ``run_fields``."""
        interval = self.interval_of(spec)
        run = self.RUN(key=key, obj=obj, spec=spec, patcher=patcher, started=started,
                       was_ready=was_ready, interval=interval,
                       retry_interval=self.retry_interval_of(spec, interval),
                       **self.run_fields(obj, spec, started))
        return cast(RunT, run)

    def run_fields(self, obj: Obj, spec: SpecT, started: float) -> dict[str, Any]:
        """The values of the kind's own ``RUN`` fields that are known at the start."""
        return {}

    def interval_of(self, spec: SpecT) -> float:
        return parse_duration(str(getattr(spec, "interval", None) or self.DEFAULT_INTERVAL))

    def retry_interval_of(self, spec: SpecT, interval: float) -> float:
        """Flux's ``GetRetryInterval``: ``spec.retryInterval``, else the interval."""
        retry = getattr(spec, "retry_interval", None)
        return parse_duration(str(retry)) if retry else interval

    def suspended(self, spec: SpecT) -> bool:
        return bool(getattr(spec, "suspend", False))

    async def intercept(self, obj: Obj, spec: SpecT | None) -> Result | None:
        """Before anything else (deletion, finalizer, status): an object this kind does not
        reconcile with its steps is handled here, and the Result ends the reconcile (Flux's
        HelmRepository of type ``oci``, static data). None, the default, goes on."""
        return None

    async def forget(self, key: ObjectKey) -> None:
        """The object is gone from the cache: drop what is kept about it."""

    async def cleanup(self, obj: Obj, spec: SpecT | None) -> None:
        """The object is being deleted: undo what reconciling it made, before the
        finalizer goes (a failure is the kind's to report; the finalizer goes anyway).
        ``spec`` is None when the model refuses it."""

    def summarize(self, run: RunT, failure: Failure | None) -> None:
        """Settle Ready/Reconciling/Stalled once the steps are over (the failing step's
        own condition is marked already). Default: Flux's ``finalizeStatus``."""
        finalize_status(run.patcher, failure)

    async def report(self, run: RunT, failure: Failure | None) -> None:
        """After the status write: events and the log line. Default: a failure is a
        Warning event (a wait, a trace event unless it warns) and an error log line
        (a wait, info); a success logs Flux's "Reconciliation finished" line."""
        if failure is None:
            self.logger.info(self.finished_message(run))
            return
        await self.failure_event(run, failure)
        self.log_failure(run, failure)

    def finished_message(self, run: RunT) -> str:
        elapsed = format_duration(self.clock.monotonic() - run.started)
        return f"Reconciliation finished in {elapsed}, next run in " \
               f"{format_duration(run.interval)}"

    async def failure_event(self, run: RunT, failure: Failure) -> None:
        if failure.waiting and not getattr(failure.error, "warn", False):
            await self.event(run, reason=failure.reason, message=failure.message,
                             trace=True)
        else:
            await self.event(run, type="Warning", reason=failure.reason,
                             message=failure.message)

    def log_failure(self, run: RunT, failure: Failure) -> None:
        if failure.unexpected:
            return  # the controller logs it with its traceback
        if failure.waiting:
            self.logger.info(failure.message, extra=fluxlog.fields(reason=failure.reason))
        elif isinstance(failure.error, RetryError) or failure.stalled:
            # retried without backoff (or not at all): the controller says nothing more
            self.logger.error(self.failed_message(run, failure),
                              extra=fluxlog.fields(error=failure.message,
                                                   reason=failure.reason))

    def failed_message(self, run: RunT, failure: Failure) -> str:
        elapsed = format_duration(self.clock.monotonic() - run.started)
        if failure.stalled:
            return f"Reconciliation failed after {elapsed}, no retry until the spec changes"
        error = failure.error
        assert isinstance(error, RetryError)
        return f"Reconciliation failed after {elapsed}, next try in " \
               f"{format_duration(error.requeue_after or run.retry_interval)}"

    async def event(self, run: RunT, *, type: EventType = "Normal", reason: str,
                    message: str,
                    metadata: Mapping[str, str] | None = None, trace: bool = False,
                    notify_only: bool = False) -> None:
        """An event about the object; kinds add their metadata (the revision)."""
        await self.recorder.event(run.obj, type=type, reason=reason, message=message,
                                  metadata=metadata, trace=trace, notify_only=notify_only)

    # --- the driver -----------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self.informer.get(key.namespace, key.name)
        if obj is None:
            await self.forget(key)
            return Result()
        spec: SpecT | None = None
        refused: ValidationError | None = None
        try:
            spec = self.SPEC.model_validate(obj.get("spec") or {})  # type: ignore[assignment]
        except ValidationError as exc:
            refused = exc
        intercepted = await self.intercept(obj, spec)
        if intercepted is not None:
            return intercepted
        if obj["metadata"].get("deletionTimestamp"):
            await self.forget(key)
            await self.cleanup(obj, spec)
            await remove_finalizer(self.client, obj)
            return Result()
        obj = await ensure_finalizer(self.client, obj)
        patcher = StatusPatcher(self.client, obj, owned_conditions=self.OWNED,
                                clock=self.clock)
        started = self.clock.monotonic()
        if refused is not None or spec is None:
            assert refused is not None
            return await self.refuse_spec(obj, patcher, refused)
        if self.suspended(spec):
            self.logger.info(self.SUSPENDED)
            return Result()
        patcher.handle_request()
        run = self.begin(key, obj, spec, patcher, started=started,
                         was_ready=cond.is_true(patcher.conditions, cond.READY))
        result: Result | None = None
        failure: Failure | None = None
        try:
            for step in self.steps():
                result = await step(run)
                if result is not None:
                    break
        except ReconcileError as exc:
            failure = Failure(exc, exc.reason, str(exc))
        except Exception as exc:
            # no step foresaw it (a bug): a failure on the status all the same; the
            # controller logs it with its traceback and retries with backoff
            failure = Failure(exc, RECONCILIATION_FAILED, str(exc) or type(exc).__name__,
                              unexpected=True)
        except BaseException as exc:
            # cancelled half-way: whatever the steps did so far is not a success
            failure = Failure(exc, RECONCILIATION_FAILED, INTERRUPTED, unexpected=True)
            raise
        finally:
            try:
                run.resources.close()
            finally:
                self.settle(run, failure)
                await patcher.patch_shielded()
        await self.report(run, failure)
        if failure is None:
            return result if result is not None else Result(requeue_after=run.interval)
        error = failure.error
        if isinstance(error, RetryError) and error.requeue_after is None:
            error.requeue_after = run.retry_interval
        raise error

    def settle(self, run: RunT, failure: Failure | None) -> None:
        """The failure onto the conditions, the kind's summary, then the guarantee: a
        failed reconcile does not read as Ready, nor as still in progress."""
        patcher = run.patcher
        condition = getattr(failure.error, "condition", None) if failure else None
        if failure is not None and condition:
            patcher.mark_true(condition, failure.reason, failure.message)
        if failure is None:
            # a stall ends with the first reconcile that gets through its steps
            patcher.delete_condition(cond.STALLED)
        self.summarize(run, failure)
        if failure is not None and not cond.is_false(patcher.conditions, cond.READY):
            # a summary that found nothing failing (an artifact still in storage) must
            # not hide the failure
            patcher.mark_false(cond.READY, failure.reason, failure.message)
        patcher.observe_generation()

    async def refuse_spec(self, obj: Obj, patcher: StatusPatcher,
                          exc: ValidationError) -> Result:
        """A spec the model refuses (the API server accepted it: a looser schema, or a
        server that does not validate): stalled until it changes, as Flux does with an
        invalid spec."""
        message = f"invalid spec: {validation_text(exc)}"
        patcher.handle_request()
        patcher.mark_false(cond.READY, VALIDATION_FAILED, message)
        patcher.mark_stalled(VALIDATION_FAILED, message)
        patcher.delete_condition(cond.RECONCILING)
        patcher.observe_generation()
        await patcher.patch_shielded()
        await self.recorder.event(obj, type="Warning", reason=VALIDATION_FAILED,
                                  message=message)
        self.logger.error("Reconciliation stalled: invalid spec",
                          extra=fluxlog.fields(error=message))
        raise StallingError(message, reason=VALIDATION_FAILED)


def validation_text(exc: ValidationError) -> str:
    """A model's refusal of a spec, as one line naming the fields (at most five)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"spec.{where}: {error.get('msg', '')}" if where else
                     str(error.get("msg", "")))
    return "; ".join(parts)


# --- summaries ----------------------------------------------------------------------

def finalize_status(patcher: StatusPatcher, failure: Failure | None) -> None:
    """Flux's ``finalizeStatus`` (kustomize, helm and notification controllers), after a
    failure has marked Ready=False (and Stalled, for a stall): Ready or Stalled drop
    Reconciling (the driver then observes the generation); a failed object keeps
    Reconciling as ``ProgressingWithRetry``."""
    if failure is not None:
        patcher.mark_false(cond.READY, failure.reason, failure.message)
        if failure.stalled:
            patcher.mark_stalled(failure.reason, failure.message)
    conditions = patcher.conditions
    if cond.is_true(conditions, cond.READY) or cond.is_stalled(conditions):
        patcher.delete_condition(cond.RECONCILING)
    elif cond.is_false(conditions, cond.READY) and cond.has(conditions, cond.RECONCILING):
        patcher.mark_reconciling(cond.PROGRESSING_WITH_RETRY_REASON,
                                 cond.message_of(conditions, cond.RECONCILING))


def summarize_conditions(patcher: StatusPatcher, failure: Failure | None, *,
                         owned: Sequence[str], negative_polarity: Sequence[str],
                         ready_message: str) -> None:
    """The source-controller's summary: Ready computed from the owned conditions in
    their order of importance, negative-polarity ones (``FetchFailed``…) first."""
    if failure is None:
        outcome, reason, message = cond.Outcome.SUCCEEDED, "", ""
    elif failure.stalled:
        outcome, reason, message = cond.Outcome.STALLED, failure.reason, failure.message
    elif failure.waiting:
        outcome, reason, message = cond.Outcome.WAITING, failure.reason, failure.message
    else:
        outcome, reason, message = cond.Outcome.FAILED, failure.reason, failure.message
    patcher.summarize(owned=owned, negative_polarity=negative_polarity, outcome=outcome,
                      reason=reason, message=message, ready_message=ready_message)


# --- the finalizer ------------------------------------------------------------------

async def ensure_finalizer(client: DriverClient, obj: Obj,
                           finalizer: str = FINALIZER) -> Obj:
    """The object with ``finalizer`` added (a merge patch guarded by its
    resourceVersion), or as it is when it has it already."""
    meta = obj["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if finalizer in finalizers:
        return obj
    return await client.merge_patch(
        str(obj["apiVersion"]), str(obj["kind"]), meta["name"],
        {"metadata": {"finalizers": [*finalizers, finalizer],
                      "resourceVersion": meta.get("resourceVersion")}},
        meta.get("namespace"))


async def remove_finalizer(client: DriverClient, obj: Obj,
                           finalizer: str = FINALIZER) -> None:
    """``finalizer`` removed, when the object has it; an object already gone is fine."""
    meta = obj["metadata"]
    current = list(meta.get("finalizers") or [])
    kept = [f for f in current if f != finalizer]
    if len(kept) == len(current):
        return
    with contextlib.suppress(NotFound):
        await client.merge_patch(str(obj["apiVersion"]), str(obj["kind"]), meta["name"],
                                 {"metadata": {"finalizers": kept or None}},
                                 meta.get("namespace"))


__all__ = ["FINALIZER", "Driver", "Failure", "Run", "Step", "ensure_finalizer",
           "finalize_status", "remove_finalizer", "summarize_conditions", "validation_text"]
