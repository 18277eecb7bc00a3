"""The reconcile loop: one outcome mapping, timeouts, bugs caught, log context."""

from __future__ import annotations

import asyncio
import io
import json
import random

import pytest
from prometheus_client import CollectorRegistry

from fluxd import logging as fluxlog
from fluxd.clock import FakeClock
from fluxd.metrics import Metrics, Outcome
from fluxd.runtime.controller import Controller, Tuning, handle_outcome, jittered
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

KEY = ObjectKey("Kustomization", "apps", "podinfo")


def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(clock=clock, kind_limits={"Kustomization": 2})


def test_success_forgets_the_backoff() -> None:
    q = queue(FakeClock())
    q.add_rate_limited(KEY)
    assert q.num_requeues(KEY) == 1
    outcome = handle_outcome(q, KEY, Result(), None, tuning=Tuning(), rng=random.Random(1))
    assert outcome is Outcome.SUCCESS and q.num_requeues(KEY) == 0


def test_requeue_after_is_jittered_within_five_percent() -> None:
    rng = random.Random(7)
    values = [jittered(600, 5, rng) for _ in range(200)]
    assert min(values) >= 570 and max(values) <= 630
    assert len({round(v) for v in values}) > 20
    assert jittered(600, 0, rng) == 600


def test_waiting_requeues_without_growing_the_backoff() -> None:
    clock = FakeClock()
    q = queue(clock)
    outcome = handle_outcome(q, KEY, None, WaitingError("dep not ready", requeue_after=30),
                             tuning=Tuning(), rng=random.Random(1))
    assert outcome is Outcome.REQUEUE_AFTER and q.num_requeues(KEY) == 0


def test_a_retry_at_a_fixed_interval_is_an_error_without_backoff_growth() -> None:
    q = queue(FakeClock())
    q.add_rate_limited(KEY)
    outcome = handle_outcome(q, KEY, None, RetryError("apply failed", requeue_after=120),
                             tuning=Tuning(), rng=random.Random(1))
    assert outcome is Outcome.ERROR and q.num_requeues(KEY) == 0


def test_stalling_is_not_retried() -> None:
    q = queue(FakeClock())
    outcome = handle_outcome(q, KEY, None, StallingError("bad spec"), tuning=Tuning(),
                             rng=random.Random(1))
    assert outcome is Outcome.TERMINAL_ERROR and len(q) == 0 and q.num_requeues(KEY) == 0


def test_errors_and_bugs_are_retried_with_backoff() -> None:
    q = queue(FakeClock())
    assert handle_outcome(q, KEY, None, ReconcileError("fetch failed"), tuning=Tuning(),
                          rng=random.Random(1)) is Outcome.ERROR
    assert handle_outcome(q, KEY, None, KeyError("oops"), tuning=Tuning(),
                          rng=random.Random(1)) is Outcome.PANIC
    assert q.num_requeues(KEY) == 2


class Scripted:
    """A reconciler that plays back behaviours."""

    def __init__(self, *steps: object, clock: FakeClock | None = None) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.clock = clock  # what a float step (a reconcile taking that long) sleeps on
        self.log_fields: list[dict[str, object]] = []

    async def reconcile(self, key: ObjectKey) -> Result:
        self.calls += 1
        self.log_fields.append(dict(fluxlog.bound()))
        step = self.steps.pop(0) if self.steps else Result()
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):
            assert self.clock is not None
            await self.clock.sleep(step)
            return Result()
        assert isinstance(step, Result)
        return step


def controller(reconciler: Scripted, clock: FakeClock, **tuning: float) -> tuple[
        Controller, WorkQueue, CollectorRegistry]:
    registry = CollectorRegistry()
    q = queue(clock)
    ctl = Controller(kind="Kustomization", reconciler=reconciler, queue=q,
                     metrics=Metrics(registry, process_metrics=False), clock=clock,
                     tuning=Tuning(**tuning), rng=random.Random(3))
    return ctl, q, registry


def count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("controller_runtime_reconcile_total",
                                      {"controller": "kustomization", "result": result})
    return value or 0.0


async def test_a_bug_in_one_reconcile_is_logged_with_traceback_and_retried() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    fluxlog.setup("info", "json", stream=stream)
    reconciler = Scripted(ZeroDivisionError("boom"))
    ctl, q, registry = controller(reconciler, clock)
    outcome = await ctl.process(KEY)
    assert outcome is Outcome.PANIC
    assert count(registry, "error") == 1
    assert registry.get_sample_value("controller_runtime_reconcile_panics_total",
                                     {"controller": "kustomization"}) == 1
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["msg"] == "Reconciler error" and "ZeroDivisionError" in line["error"]
    assert "Traceback" in line["stacktrace"]
    assert line["name"] == "podinfo" and line["namespace"] == "apps"
    assert line["controller"] == "kustomization" and line["reconcileID"]
    assert q.num_requeues(KEY) == 1


async def test_each_reconcile_gets_its_own_reconcile_id() -> None:
    reconciler = Scripted(Result(), Result())
    ctl, _, _ = controller(reconciler, FakeClock())
    await ctl.process(KEY)
    await ctl.process(KEY)
    ids = [f["reconcileID"] for f in reconciler.log_fields]
    assert len(set(ids)) == 2
    assert reconciler.log_fields[0]["controllerKind"] == "Kustomization"


async def test_a_reconcile_past_its_deadline_is_cancelled_and_retried() -> None:
    clock = FakeClock()
    reconciler = Scripted(0.5, clock=clock)
    ctl, q, registry = controller(reconciler, clock, timeout=0.05)
    processing = asyncio.create_task(ctl.process(KEY))
    for _ in range(100):
        if reconciler.calls:
            break
        await asyncio.sleep(0)
    clock.advance(0.05)  # the deadline passes while the reconcile still works
    outcome = await processing
    assert outcome is Outcome.TIMEOUT
    assert registry.get_sample_value("controller_runtime_reconcile_timeouts_total",
                                     {"controller": "kustomization"}) == 1
    assert q.num_requeues(KEY) == 1


async def test_workers_run_keys_until_the_queue_shuts_down() -> None:
    clock = FakeClock()
    reconciler = Scripted(Result(), Result(requeue_after=60.0))
    ctl, q, registry = controller(reconciler, clock)
    async with asyncio.TaskGroup() as tg:
        timer = tg.create_task(q.run())
        runner = tg.create_task(ctl.run())
        q.add(KEY)
        q.add(ObjectKey("Kustomization", "apps", "other"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert reconciler.calls == 2
        assert count(registry, "success") == 1 and count(registry, "requeue_after") == 1
        clock.advance(64)  # the requeue fires within 60 s ± 5 %
        for _ in range(50):
            await asyncio.sleep(0)
        assert reconciler.calls == 3
        q.shut_down()
        await asyncio.wait_for(runner, 5)
        timer.cancel()


async def test_a_deleted_objects_duration_series_is_dropped_not_recorded_again() -> None:
    """Flux deletes an object's gotk_reconcile_duration_seconds series with the object; the
    last reconcile (which finds it gone) must not bring the series back."""
    present = {KEY}
    reconciler = Scripted(Result(), Result())
    registry = CollectorRegistry()
    ctl = Controller(kind="Kustomization", reconciler=reconciler, queue=queue(FakeClock()),
                     metrics=Metrics(registry, process_metrics=False), clock=FakeClock(),
                     exists=lambda key: key in present)
    labels = {"kind": "Kustomization", "name": "podinfo", "namespace": "apps"}
    await ctl.process(KEY)
    assert registry.get_sample_value("gotk_reconcile_duration_seconds_count", labels) == 1
    present.clear()
    await ctl.process(KEY)
    assert registry.get_sample_value("gotk_reconcile_duration_seconds_count", labels) is None
    assert count(registry, "success") == 2
