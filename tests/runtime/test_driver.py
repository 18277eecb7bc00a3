"""The one reconcile driver: every outcome of a step ends summarised and written, with
the event, the log line and the error the controller maps to queue actions and metrics.

A fake client keeps the objects in a dict (the driver's unit contract; the controllers'
tests run the same driver against the cluster fixture)."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import Field

from fluxd.api.meta import FluxModel
from fluxd.clock import FakeClock
from fluxd.kube.errors import NotFound
from fluxd.metrics import Outcome
from fluxd.runtime import conditions as cond
from fluxd.runtime.controller import Tuning, handle_outcome
from fluxd.runtime.driver import FINALIZER, Driver, Failure, Run, Step, summarize_conditions
from fluxd.runtime.reconcile import (
    ObjectKey,
    ReconcileError,
    Result,
    RetryError,
    StallingError,
    WaitingError,
)
from fluxd.runtime.workqueue import WorkQueue

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]
API_VERSION = "test.fluxd.io/v1"
KEY = ObjectKey("Widget", "apps", "w1")


class WidgetSpec(FluxModel):
    interval: str = "5m"
    retry_interval: str | None = None
    suspend: bool = False
    size: int = Field(default=1, ge=0)


class FakeClient:
    """Objects in a dict; merge patches of metadata and status as the API server does."""

    def __init__(self, *objects: Obj) -> None:
        self.objects = {(o["metadata"]["namespace"], o["metadata"]["name"]): o
                        for o in objects}
        self.status_patches: list[Obj] = []

    def _find(self, name: str, namespace: str | None) -> Obj:
        found = self.objects.get((namespace or "", name))
        if found is None:
            raise NotFound(f'widgets "{name}" not found')
        return found

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj:
        return copy.deepcopy(self._find(name, namespace))

    async def patch_status(self, api_version: str, kind: str, name: str, patch: Obj,
                           namespace: str | None = None) -> Obj:
        obj = self._find(name, namespace)
        self.status_patches.append(copy.deepcopy(patch))
        status = obj.setdefault("status", {})
        for key, value in patch["status"].items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        return copy.deepcopy(obj)

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: Obj,
                          namespace: str | None = None) -> Obj:
        obj = self._find(name, namespace)
        for key, value in patch["metadata"].items():
            if key == "resourceVersion":
                continue
            if value is None:
                obj["metadata"].pop(key, None)
            else:
                obj["metadata"][key] = copy.deepcopy(value)
        return copy.deepcopy(obj)


class Cache:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def get(self, namespace: str, name: str) -> Obj | None:
        found = self.client.objects.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None


@dataclass
class Recorder:
    events: list[tuple[str, str, str, bool]] = field(default_factory=list)

    async def event(self, obj: Mapping[str, Any], *, type: str = "Normal", reason: str,
                    message: str, metadata: Mapping[str, str] | None = None,
                    trace: bool = False, notify_only: bool = False) -> None:
        self.events.append((type, reason, message, trace))


@dataclass
class WidgetRun(Run[WidgetSpec]):
    trail: list[str] = field(default_factory=list)


@dataclass
class WidgetReconciler(Driver[WidgetSpec, WidgetRun]):
    """Two steps; the second does what ``behaviour`` says."""

    API_VERSION = API_VERSION
    KIND = "Widget"
    SPEC = WidgetSpec
    OWNED = (cond.READY, cond.RECONCILING, cond.STALLED, "Built", "FetchFailed")
    RUN = WidgetRun

    behaviour: Any = None
    forgotten: list[ObjectKey] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    def steps(self) -> Sequence[Step[WidgetRun]]:
        return [self.prepare, self.build]

    async def prepare(self, run: WidgetRun) -> Result | None:
        run.trail.append("prepare")
        run.patcher.mark_reconciling(cond.PROGRESSING_REASON, "Reconciliation in progress")
        run.patcher.mark_unknown(cond.READY, cond.PROGRESSING_REASON,
                                 "Reconciliation in progress")
        return None

    async def build(self, run: WidgetRun) -> Result | None:
        run.trail.append("build")
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if isinstance(self.behaviour, Result):
            return self.behaviour
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        run.patcher.mark_true(cond.READY, cond.SUCCEEDED_REASON, f"built {run.spec.size}")
        return None

    async def forget(self, key: ObjectKey) -> None:
        self.forgotten.append(key)

    async def cleanup(self, obj: Obj, spec: WidgetSpec | None) -> None:
        self.cleaned.append(obj["metadata"]["name"])


def widget(**spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "Widget",
            "metadata": {"name": "w1", "namespace": "apps", "generation": 3,
                         "resourceVersion": "7", "uid": "u1",
                         "finalizers": [FINALIZER]},
            "spec": spec or {"interval": "5m"}}


@dataclass
class Harness:
    client: FakeClient
    reconciler: WidgetReconciler
    recorder: Recorder
    clock: FakeClock

    @property
    def status(self) -> Obj:
        return dict(self.client.objects[("apps", "w1")].get("status") or {})

    def condition(self, type_: str) -> Obj:
        return cond.get(self.status.get("conditions"), type_) or {}


def harness(obj: Obj | None = None, behaviour: Any = None) -> Harness:
    client = FakeClient(*([obj] if obj is not None else []))
    recorder = Recorder()
    clock = FakeClock()
    reconciler = WidgetReconciler(client=client, informer=Cache(client), recorder=recorder,
                                  clock=clock, behaviour=behaviour)
    return Harness(client, reconciler, recorder, clock)


def outcome_of(error: BaseException | None, result: Result | None = None) -> Outcome:
    clock = FakeClock()
    queue = WorkQueue(clock=clock, kind_limits={"Widget": 1})
    return handle_outcome(queue, KEY, result, error, tuning=Tuning(), rng=random.Random(1))


# --- success ----------------------------------------------------------------------------

async def test_steps_run_in_order_and_success_requeues_at_the_interval() -> None:
    h = harness(widget(interval="5m", size=4))
    result = await h.reconciler.reconcile(KEY)
    assert result == Result(requeue_after=300)
    assert h.condition(cond.READY)["status"] == "True"
    assert h.condition(cond.READY)["message"] == "built 4"
    assert not h.condition(cond.RECONCILING), "Ready drops Reconciling"
    assert h.status["observedGeneration"] == 3
    assert outcome_of(None, result) is Outcome.REQUEUE_AFTER


async def test_a_step_returning_a_result_ends_the_list_as_a_success() -> None:
    h = harness(widget(), behaviour=Result(requeue_after=2))
    assert await h.reconciler.reconcile(KEY) == Result(requeue_after=2)
    assert not h.recorder.events


async def test_the_finished_line_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    h = harness(widget(interval="10m"))
    with caplog.at_level(logging.INFO, logger="fluxd.reconcile"):
        await h.reconciler.reconcile(KEY)
    assert "Reconciliation finished in 0s, next run in 10m0s" in caplog.messages


# --- failures ---------------------------------------------------------------------------

async def test_a_reconcile_error_marks_its_condition_and_ready_false_and_backs_off() -> None:
    error = ReconcileError("clone failed", reason="GitOperationFailed",
                           condition="FetchFailed")
    h = harness(widget(), behaviour=error)
    with pytest.raises(ReconcileError) as raised:
        await h.reconciler.reconcile(KEY)
    assert raised.value is error
    ready = h.condition(cond.READY)
    assert (ready["status"], ready["reason"], ready["message"]) == \
        ("False", "GitOperationFailed", "clone failed")
    assert h.condition("FetchFailed")["status"] == "True"
    assert h.condition(cond.RECONCILING)["reason"] == cond.PROGRESSING_WITH_RETRY_REASON
    assert "observedGeneration" not in h.status
    assert h.recorder.events == [("Warning", "GitOperationFailed", "clone failed", False)]
    assert outcome_of(raised.value) is Outcome.ERROR


async def test_a_retry_error_without_an_interval_gets_the_retry_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    h = harness(widget(interval="10m", retryInterval="1m"),
                behaviour=RetryError("apply failed", reason="ReconciliationFailed"))
    with caplog.at_level(logging.INFO, logger="fluxd.reconcile"), \
            pytest.raises(RetryError) as raised:
        await h.reconciler.reconcile(KEY)
    assert raised.value.requeue_after == 60
    assert h.condition(cond.READY)["status"] == "False"
    assert "Reconciliation failed after 0s, next try in 1m0s" in caplog.messages
    assert outcome_of(raised.value) is Outcome.ERROR, "a failure, counted as one"


async def test_a_wait_is_a_trace_event_and_not_counted_as_an_error() -> None:
    h = harness(widget(), behaviour=WaitingError("dependency 'apps/db' is not ready",
                                                 requeue_after=30))
    with pytest.raises(WaitingError) as raised:
        await h.reconciler.reconcile(KEY)
    ready = h.condition(cond.READY)
    assert (ready["status"], ready["reason"]) == ("False", "DependencyNotReady")
    assert h.recorder.events == [("Normal", "DependencyNotReady",
                                  "dependency 'apps/db' is not ready", True)]
    assert outcome_of(raised.value) is Outcome.REQUEUE_AFTER


async def test_a_stall_marks_stalled_observes_the_generation_and_is_terminal() -> None:
    h = harness(widget(), behaviour=StallingError("bad expression", reason="InvalidCEL"))
    with pytest.raises(StallingError) as raised:
        await h.reconciler.reconcile(KEY)
    assert h.condition(cond.STALLED)["status"] == "True"
    assert h.condition(cond.READY)["reason"] == "InvalidCEL"
    assert not h.condition(cond.RECONCILING)
    assert h.status["observedGeneration"] == 3
    assert outcome_of(raised.value) is Outcome.TERMINAL_ERROR


async def test_an_unexpected_exception_never_leaves_in_progress_behind() -> None:
    bug = KeyError("id")
    h = harness(widget(), behaviour=bug)
    with pytest.raises(KeyError) as raised:
        await h.reconciler.reconcile(KEY)
    assert raised.value is bug, "re-raised for the controller's traceback"
    ready = h.condition(cond.READY)
    assert (ready["status"], ready["reason"]) == ("False", "ReconciliationFailed")
    assert ready["message"] == "'id'"
    assert h.condition(cond.RECONCILING)["reason"] == cond.PROGRESSING_WITH_RETRY_REASON
    assert h.recorder.events == [("Warning", "ReconciliationFailed", "'id'", False)]
    assert outcome_of(raised.value) is Outcome.PANIC


async def test_a_cancelled_reconcile_is_written_as_a_failure() -> None:
    h = harness(widget(), behaviour="hang")
    task = asyncio.ensure_future(h.reconciler.reconcile(KEY))
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ready = h.condition(cond.READY)
    assert (ready["status"], ready["reason"]) == ("False", "ReconciliationFailed")
    assert "interrupted" in ready["message"]


async def test_resources_opened_by_steps_are_closed_whatever_happens() -> None:
    closed: list[str] = []

    class Closing(WidgetReconciler):
        async def prepare(self, run: WidgetRun) -> Result | None:
            run.resources.callback(closed.append, "tmp")
            return None

    client = FakeClient(widget())
    reconciler = Closing(client=client, informer=Cache(client), recorder=Recorder(),
                         clock=FakeClock(), behaviour=ReconcileError("x"))
    with pytest.raises(ReconcileError):
        await reconciler.reconcile(KEY)
    assert closed == ["tmp"]


async def test_a_summary_that_finds_nothing_failing_does_not_hide_a_failure() -> None:
    class Summarising(WidgetReconciler):
        def summarize(self, run: WidgetRun, failure: Failure | None) -> None:
            run.patcher.mark_true("Built", "Succeeded", "artifact in storage")
            summarize_conditions(run.patcher, None, owned=self.OWNED,
                                 negative_polarity=("FetchFailed",),
                                 ready_message="stored")

    client = FakeClient(widget())
    reconciler = Summarising(client=client, informer=Cache(client), recorder=Recorder(),
                             clock=FakeClock(), behaviour=ReconcileError("boom"))
    with pytest.raises(ReconcileError):
        await reconciler.reconcile(KEY)
    ready = cond.get(client.objects[("apps", "w1")]["status"]["conditions"], cond.READY)
    assert ready is not None and (ready["status"], ready["message"]) == ("False", "boom")


# --- before the steps -------------------------------------------------------------------

async def test_a_gone_object_is_forgotten() -> None:
    h = harness(None)
    assert await h.reconciler.reconcile(KEY) == Result()
    assert h.reconciler.forgotten == [KEY]


async def test_a_deleted_object_is_cleaned_up_and_its_finalizer_removed() -> None:
    obj = widget()
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    obj["metadata"]["finalizers"] = ["other.io/keep", FINALIZER]
    h = harness(obj)
    assert await h.reconciler.reconcile(KEY) == Result()
    assert h.reconciler.cleaned == ["w1"] and h.reconciler.forgotten == [KEY]
    assert h.client.objects[("apps", "w1")]["metadata"]["finalizers"] == ["other.io/keep"]
    assert not h.client.status_patches


async def test_the_finalizer_is_added_before_the_steps() -> None:
    obj = widget()
    obj["metadata"]["finalizers"] = []
    h = harness(obj)
    await h.reconciler.reconcile(KEY)
    assert h.client.objects[("apps", "w1")]["metadata"]["finalizers"] == [FINALIZER]


async def test_a_suspended_object_runs_no_step_and_writes_nothing() -> None:
    h = harness(widget(suspend=True), behaviour=ReconcileError("must not run"))
    assert await h.reconciler.reconcile(KEY) == Result()
    assert not h.client.status_patches


async def test_a_spec_the_model_refuses_stalls_the_object() -> None:
    h = harness(widget(size=-1))
    with pytest.raises(StallingError) as raised:
        await h.reconciler.reconcile(KEY)
    assert raised.value.reason == "ValidationFailed"
    assert "spec.size" in str(raised.value)
    assert h.condition(cond.STALLED)["status"] == "True"
    assert h.status["observedGeneration"] == 3


async def test_a_reconcile_request_is_recorded_whatever_the_outcome() -> None:
    obj = widget()
    obj["metadata"]["annotations"] = {cond.RECONCILE_REQUEST_ANNOTATION: "now-1"}
    h = harness(obj, behaviour=ReconcileError("failed"))
    with pytest.raises(ReconcileError):
        await h.reconciler.reconcile(KEY)
    assert h.status["lastHandledReconcileAt"] == "now-1"
