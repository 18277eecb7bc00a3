"""The shared work queue, on virtual time: the clock moves only when a test advances it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from anyio.abc import TaskGroup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.clock import FakeClock
from fluxd.runtime.ratelimit import ItemExponentialFailure
from fluxd.runtime.reconcile import ObjectKey
from fluxd.runtime.workqueue import KindStats, WorkQueue

pytestmark = pytest.mark.anyio

KS = "Kustomization"
GIT = "GitRepository"
HELM = "HelmRelease"
FLUX_LIMITS = {GIT: 2, "OCIRepository": 2, "HelmChart": 2, KS: 4, HELM: 4, "Alert": 4}


def key(name: str, kind: str = KS) -> ObjectKey:
    return ObjectKey(kind, "flux-system", name)


A, B, C, D = key("a"), key("b"), key("c"), key("d")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(clock: FakeClock) -> WorkQueue:
    return WorkQueue(clock=clock, kind_limits=FLUX_LIMITS)


async def settle() -> None:
    """Let every runnable task run until it blocks again."""
    for _ in range(20):
        await asyncio.sleep(0)


async def advance(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    await settle()


@asynccontextmanager
async def running(queue: WorkQueue) -> AsyncIterator[TaskGroup]:
    """The queue's delay timer running, plus a task group for workers; all ended on exit."""
    async with anyio.create_task_group() as group:
        group.start_soon(queue.run)
        await settle()
        yield group
        queue.shut_down()


def take(queue: WorkQueue, kind: str, into: list[ObjectKey | None], group: TaskGroup) -> None:
    """Start a worker that gets one key of ``kind`` and keeps it (no ``done``)."""
    async def worker() -> None:
        into.append(await queue.get(kind))

    group.start_soon(worker)


async def process_due(queue: WorkQueue, kind: str = KS) -> list[ObjectKey]:
    """Everything due of ``kind`` now, each processed at once (get, done)."""
    keys = []
    while queue.depth(kind) and queue.stats()[kind].processing < queue.kind_limit(kind):
        got = await queue.get(kind)
        assert got is not None
        keys.append(got)
        queue.done(got)
    return keys


# ---- stingy and fair --------------------------------------------------------------------

async def test_a_key_added_twice_is_queued_once(queue: WorkQueue) -> None:
    queue.add(A)
    queue.add(A)
    queue.add(B)
    assert len(queue) == 2
    assert await process_due(queue) == [A, B]


async def test_keys_of_a_kind_are_handed_out_in_the_order_they_were_added(
        queue: WorkQueue) -> None:
    for k in (C, A, D, B):
        queue.add(k)
    assert await process_due(queue) == [C, A, D, B]


async def test_a_key_in_processing_is_never_handed_to_a_second_worker(queue: WorkQueue) -> None:
    queue.add(A)
    assert await queue.get(KS) == A
    queue.add(A)
    got: list[ObjectKey | None] = []
    async with running(queue) as group:
        take(queue, KS, got, group)
        await settle()
        assert got == []  # the second worker waits although the kind's limit is 4
        queue.done(A)
        await settle()
        assert got == [A]


async def test_item_added_while_processing_is_processed_once_more(queue: WorkQueue) -> None:
    queue.add(A)
    assert await queue.get(KS) == A
    queue.add(A)
    queue.add(A)
    queue.add(A, low_priority=True)
    assert queue.depth(KS) == 1
    queue.done(A)
    assert await process_due(queue) == [A]
    assert len(queue) == 0


async def test_a_key_readded_while_processing_goes_to_the_back_of_the_line(
        queue: WorkQueue) -> None:
    queue.add(A)
    assert await queue.get(KS) == A
    queue.add(A)
    queue.add(B)
    queue.done(A)
    assert await process_due(queue) == [B, A]


async def test_done_for_a_key_not_in_processing_is_ignored(queue: WorkQueue) -> None:
    queue.add(A)
    queue.done(A)
    queue.done(key("x", kind="Unknown"))
    assert await process_due(queue) == [A]


# ---- priorities -------------------------------------------------------------------------

async def test_low_priority_initial_items_yield_to_a_fresh_normal_item(queue: WorkQueue) -> None:
    queue.add(A, low_priority=True)
    queue.add(B, low_priority=True)
    queue.add(C)
    assert await process_due(queue) == [C, A, B]


async def test_a_normal_add_promotes_a_waiting_low_priority_item(queue: WorkQueue) -> None:
    queue.add(A, low_priority=True)
    queue.add(B, low_priority=True)
    queue.add(C)
    queue.add(B)
    assert queue.stats()[KS].depth_low == 1
    assert await process_due(queue) == [C, B, A]


async def test_a_low_priority_add_does_not_demote_a_normal_item(queue: WorkQueue) -> None:
    queue.add(A, low_priority=True)
    queue.add(B)
    queue.add(B, low_priority=True)
    assert await process_due(queue) == [B, A]


async def test_low_priority_items_are_handed_out_when_nothing_else_waits(
        queue: WorkQueue) -> None:
    got: list[ObjectKey | None] = []
    async with running(queue) as group:
        take(queue, KS, got, group)
        await settle()
        queue.add(A, low_priority=True)
        await settle()
        assert got == [A]


# ---- delays -----------------------------------------------------------------------------

async def test_add_after_makes_a_key_due_when_the_clock_reaches_it(
        queue: WorkQueue, clock: FakeClock) -> None:
    got: list[ObjectKey | None] = []
    async with running(queue) as group:
        take(queue, KS, got, group)
        queue.add_after(A, 5)
        await advance(clock, 4.9)
        assert got == []
        assert len(queue) == 0
        await advance(clock, 0.2)
        assert got == [A]


async def test_the_earliest_of_several_delayed_adds_wins(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        queue.add_after(A, 10)
        queue.add_after(A, 3)
        queue.add_after(A, 7)
        await advance(clock, 3)
        assert await process_due(queue) == [A]
        await advance(clock, 10)
        assert len(queue) == 0


async def test_a_delay_of_zero_or_less_is_a_plain_add(queue: WorkQueue) -> None:
    queue.add_after(A, 0)
    queue.add_after(B, -1)
    assert await process_due(queue) == [A, B]


async def test_a_delayed_add_for_a_key_already_due_is_ignored(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        queue.add(A)
        queue.add_after(A, 5)
        assert await process_due(queue) == [A]
        await advance(clock, 5)
        assert len(queue) == 0


async def test_a_plain_add_supersedes_a_pending_delayed_add(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        queue.add_after(A, 5)
        queue.add(A, low_priority=True)
        queue.add(B, low_priority=True)
        assert await process_due(queue) == [A, B]  # A keeps the normal priority of its delayed add
        await advance(clock, 5)
        assert len(queue) == 0


async def test_a_delayed_add_that_falls_due_during_processing_waits_for_done(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        queue.add(A)
        assert await queue.get(KS) == A
        queue.add_after(A, 1)
        await advance(clock, 1)
        assert queue.depth(KS) == 1
        queue.done(A)
        assert await process_due(queue) == [A]


async def test_delayed_adds_fire_in_time_order_for_many_keys(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        for i, delay in enumerate([9, 2, 5, 2.5, 30]):
            queue.add_after(key(f"k{i}"), delay)
        await advance(clock, 10)
        assert await process_due(queue) == [key("k1"), key("k3"), key("k2"), key("k0")]
        await advance(clock, 20)
        assert await process_due(queue) == [key("k4")]


async def test_rate_limited_adds_back_off_from_0_75_s_doubling_up_to_900_s_until_forgotten(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        expected = [0.75, 1.5, 3, 6, 12, 24, 48, 96, 192, 384, 768, 900, 900]
        for delay in expected:
            queue.add_rate_limited(A)
            await advance(clock, delay - 0.01)
            assert len(queue) == 0, delay
            await advance(clock, 0.02)
            assert await process_due(queue) == [A]
        assert queue.num_requeues(A) == len(expected)
        queue.forget(A)
        assert queue.num_requeues(A) == 0
        queue.add_rate_limited(A)
        await advance(clock, 0.76)
        assert await process_due(queue) == [A]


async def test_a_new_earlier_delay_wakes_the_timer_sleeping_for_a_later_one(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with running(queue):
        queue.add_after(A, 100)
        await settle()  # the timer now sleeps for 100 s
        queue.add_after(B, 1)
        await advance(clock, 1)
        assert await process_due(queue) == [B]


# ---- per-kind limits --------------------------------------------------------------------

async def test_a_fifth_kustomization_waits_while_four_are_processing_but_other_kinds_do_not(
        queue: WorkQueue) -> None:
    got: list[ObjectKey | None] = []
    async with running(queue) as group:
        for i in range(5):
            queue.add(key(f"ks{i}"))
        queue.add(key("repo", kind=GIT))
        for _ in range(6):
            take(queue, KS, got, group)
        await settle()
        assert got == [key(f"ks{i}") for i in range(4)]
        assert await queue.get(GIT) == key("repo", kind=GIT)
        assert queue.stats()[KS].processing == 4
        queue.done(key("ks2"))
        await settle()
        assert got[4:] == [key("ks4")]
        queue.add(key("ks2"))
        queue.done(key("ks0"))
        await settle()
        assert got[5:] == [key("ks2")]


async def test_unknown_kinds_get_the_default_limit(clock: FakeClock) -> None:
    queue = WorkQueue(clock=clock, default_kind_limit=2)
    for name in "xyz":
        queue.add(key(name, kind="Bucket"))
    assert await queue.get("Bucket") == key("x", kind="Bucket")
    assert await queue.get("Bucket") == key("y", kind="Bucket")
    assert queue.kind_limit("Bucket") == 2
    assert queue.depth("Bucket") == 1


async def test_raising_a_kind_limit_at_run_time_releases_waiting_workers(
        queue: WorkQueue) -> None:
    got: list[ObjectKey | None] = []
    queue.set_kind_limit(KS, 1)
    async with running(queue) as group:
        for k in (A, B, C):
            queue.add(k)
            take(queue, KS, got, group)
        await settle()
        assert got == [A]
        queue.set_kind_limit(KS, 3)
        await settle()
        assert got == [A, B, C]


async def test_lowering_a_kind_limit_lets_running_work_finish_and_drops_nothing(
        queue: WorkQueue) -> None:
    got: list[ObjectKey | None] = []
    async with running(queue) as group:
        for k in (A, B, C, D):
            queue.add(k)
        for _ in range(4):
            take(queue, KS, got, group)
        await settle()
        queue.set_kind_limit(KS, 1)
        assert got == [A, B, C, D]
        for k in (A, B, C):
            queue.add(key(f"new-{k.name}"))
        for _ in range(3):
            take(queue, KS, got, group)
        queue.done(A)
        queue.done(B)
        queue.done(C)
        await settle()
        assert len(got) == 4  # D still runs, and the limit is 1 now
        queue.done(D)
        await settle()
        assert got[4:] == [key("new-a")]
        queue.done(key("new-a"))
        await settle()
        queue.done(key("new-b"))
        await settle()
        assert got[4:] == [key("new-a"), key("new-b"), key("new-c")]


async def test_a_limit_below_one_is_refused(queue: WorkQueue, clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        queue.set_kind_limit(KS, 0)
    with pytest.raises(ValueError):
        WorkQueue(clock=clock, kind_limits={KS: 0})


# ---- cancellation -----------------------------------------------------------------------

async def test_a_cancelled_waiting_worker_takes_no_key_with_it(queue: WorkQueue) -> None:
    got: list[ObjectKey | None] = []
    async with anyio.create_task_group() as group:
        take(queue, KS, got, group)
        await settle()
        group.cancel_scope.cancel()
    queue.add(A)
    assert await process_due(queue) == [A]


async def test_a_key_handed_to_a_worker_cancelled_before_it_woke_goes_back_to_the_front(
        queue: WorkQueue) -> None:
    async with asyncio.TaskGroup() as group:
        worker = group.create_task(queue.get(KS))
        await settle()
        queue.add(A)  # handed straight to the waiting worker, which has not run yet
        queue.add(B)
        worker.cancel()
    assert worker.cancelled()
    assert queue.stats()[KS].processing == 0
    assert await process_due(queue) == [A, B]


# ---- shutdown ---------------------------------------------------------------------------

async def test_shut_down_returns_none_to_waiting_and_later_workers(queue: WorkQueue) -> None:
    got: list[ObjectKey | None] = []
    async with running(queue) as group:
        take(queue, KS, got, group)
        take(queue, GIT, got, group)
        await settle()
        queue.add(B, low_priority=False)
        await settle()
        queue.add(C)
        queue.shut_down()
        await settle()
        assert got == [B, None]
        assert await queue.get(KS) is None  # C was queued, but the queue is shut down
        queue.add(D)
        queue.add_after(D, 1)
        queue.add_rate_limited(D)
        assert queue.depth(KS) == 1
        assert queue.shutting_down


async def test_shut_down_ends_run_and_drops_pending_delays(
        queue: WorkQueue, clock: FakeClock) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(queue.run)
        queue.add_after(A, 5)
        await settle()
        queue.shut_down()
    await advance(clock, 10)
    assert len(queue) == 0


async def test_run_cannot_run_twice(queue: WorkQueue) -> None:
    async with running(queue):
        with pytest.raises(RuntimeError):
            await queue.run()


async def test_drain_waits_for_work_in_flight_and_hands_out_what_was_queued(
        queue: WorkQueue, clock: FakeClock) -> None:
    drained: list[bool] = []
    got: list[ObjectKey | None] = []
    queue.add(A)
    queue.add(B)
    assert await queue.get(KS) == A
    assert await queue.get(KS) == B
    queue.add(B)  # due again after its current run
    queue.add(C)
    queue.add_after(D, 1)

    async def shut_down() -> None:
        drained.append(await queue.shut_down_with_drain(30))

    async with running(queue) as group:
        take(queue, GIT, got, group)
        group.start_soon(shut_down)
        await settle()
        assert got == [None]  # nothing of that kind is left to do
        queue.add(key("late"))  # refused
        assert await queue.get(KS) == C
        queue.done(A)
        queue.done(C)
        await settle()
        assert drained == []
        queue.done(B)
        assert await queue.get(KS) == B
        take(queue, KS, got, group)
        await settle()
        assert drained == []
        queue.done(B)
        await settle()
        assert drained == [True]
        assert got == [None, None]
        assert await queue.get(KS) is None
    await advance(clock, 1)
    assert len(queue) == 0  # the delayed add was dropped


async def test_drain_gives_up_after_its_timeout(queue: WorkQueue, clock: FakeClock) -> None:
    drained: list[bool] = []
    queue.add(A)
    assert await queue.get(KS) == A

    async def shut_down() -> None:
        drained.append(await queue.shut_down_with_drain(30))

    async with anyio.create_task_group() as group:
        group.start_soon(shut_down)
        await settle()
        await advance(clock, 29)
        assert drained == []
        await advance(clock, 1)
        assert drained == [False]
    assert await queue.get(KS) is None
    queue.done(A)


async def test_drain_with_nothing_to_do_returns_at_once(queue: WorkQueue) -> None:
    assert await queue.shut_down_with_drain(30) is True
    assert await queue.get(KS) is None


async def test_shut_down_during_a_drain_ends_it(queue: WorkQueue) -> None:
    drained: list[bool] = []
    queue.add(A)
    assert await queue.get(KS) == A

    async def shut_down() -> None:
        drained.append(await queue.shut_down_with_drain(None))

    async with anyio.create_task_group() as group:
        group.start_soon(shut_down)
        await settle()
        queue.shut_down()
    assert drained == [False]


# ---- observing --------------------------------------------------------------------------

async def test_stats_report_depth_priority_and_the_age_of_work_in_flight(
        queue: WorkQueue, clock: FakeClock) -> None:
    queue.add(A)
    queue.add(B, low_priority=True)
    assert await queue.get(KS) == A
    await advance(clock, 2)
    queue.add(C)
    assert await queue.get(KS) == C
    queue.add(A, low_priority=True)
    await advance(clock, 3)
    stats = queue.stats()
    assert stats[KS] == KindStats(depth=2, depth_low=2, processing=2,
                                  unfinished_seconds=8.0, longest_running_seconds=5.0)
    assert stats[GIT] == KindStats(0, 0, 0, 0.0, 0.0)
    assert len(queue) == 2


@dataclass
class RecordingMetrics:
    events: list[tuple[str, str, float | None]] = field(default_factory=list)

    def added(self, kind: str) -> None:
        self.events.append(("added", kind, None))

    def retried(self, kind: str) -> None:
        self.events.append(("retried", kind, None))

    def queued_for(self, kind: str, seconds: float) -> None:
        self.events.append(("queued_for", kind, seconds))

    def worked_for(self, kind: str, seconds: float) -> None:
        self.events.append(("worked_for", kind, seconds))


async def test_metrics_hooks_see_adds_retries_and_the_time_queued_and_worked(
        clock: FakeClock) -> None:
    metrics = RecordingMetrics()
    queue = WorkQueue(clock=clock, kind_limits=FLUX_LIMITS, metrics=metrics)
    async with running(queue):
        queue.add(A)
        queue.add(A)  # deduplicated: not counted
        await advance(clock, 1)
        assert await queue.get(KS) == A
        await advance(clock, 4)
        queue.add_rate_limited(A)
        queue.done(A)
        await advance(clock, 0.75)
    assert metrics.events == [
        ("added", KS, None), ("queued_for", KS, 1.0), ("retried", KS, None),
        ("worked_for", KS, 4.0), ("added", KS, None)]


# ---- against a model --------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from("abcde"), st.booleans()),
    st.tuples(st.just("get"), st.just(""), st.just(False)),
    st.tuples(st.just("done"), st.sampled_from("abcde"), st.just(False)),
), max_size=60)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(OPS)
async def test_the_queue_behaves_like_a_simple_model(
        ops: list[tuple[str, str, bool]]) -> None:
    queue = WorkQueue(clock=FakeClock(), kind_limits={KS: 2},
                      rate_limiter=ItemExponentialFailure())
    normal: list[str] = []
    low: list[str] = []
    parked: dict[str, bool] = {}
    processing: set[str] = set()
    for op, name, is_low in ops:
        if op == "add":
            queue.add(key(name), low_priority=is_low)
            if name in normal:
                pass
            elif name in low:
                if not is_low:
                    low.remove(name)
                    normal.append(name)
            elif name in processing:
                parked[name] = parked.get(name, True) and is_low
            else:
                (low if is_low else normal).append(name)
        elif op == "get":
            if len(processing) < 2 and (normal or low):
                expected = normal.pop(0) if normal else low.pop(0)
                assert await queue.get(KS) == key(expected)
                processing.add(expected)
        elif name in processing:
            queue.done(key(name))
            processing.discard(name)
            if name in parked:
                (low if parked.pop(name) else normal).append(name)
        stats = queue.stats()[KS]
        assert stats.processing == len(processing)
        assert stats.depth == len(normal) + len(low) + len(parked)
        assert stats.depth_low == len(low) + sum(parked.values())
