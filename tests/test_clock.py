"""The clocks: sleeps and deadlines on a clock's own time (fake, real, real with jumps)."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from fluxd.clock import Deadline, FakeClock, JumpClock, SystemClock

pytestmark = pytest.mark.anyio


async def settle() -> None:
    """Let woken tasks run (a few loop iterations, no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- FakeClock


async def test_fake_sleepers_wake_in_time_order_once_the_clock_reaches_them() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper("late", 10))
        group.create_task(sleeper("early", 5))
        await settle()
        clock.advance(4.9)
        await settle()
        assert woke == []
        clock.advance(10)
        await settle()
    assert woke == ["early", "late"]


async def test_a_fake_deadline_fires_when_the_clock_is_advanced_past_it() -> None:
    clock = FakeClock()
    reached = asyncio.Event()

    async def work() -> None:
        async with clock.timeout(30):
            reached.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await reached.wait()
    clock.advance(29)
    await settle()
    assert not task.done()
    clock.advance(1)
    with pytest.raises(TimeoutError):
        await task


async def test_a_block_that_ends_in_time_is_not_expired() -> None:
    clock = FakeClock()
    async with clock.timeout(5) as deadline:
        await clock.sleep(0)
    assert not deadline.expired()
    clock.advance(10)  # the cancelled timer does nothing
    await settle()


async def test_expired_tells_the_deadline_fired() -> None:
    clock = FakeClock()
    deadline = clock.timeout(1)
    with pytest.raises(TimeoutError):
        async with deadline:
            clock.advance(1)
            await asyncio.sleep(0)
    assert deadline.expired()


async def test_a_timeout_counts_from_when_it_is_made() -> None:
    clock = FakeClock()
    deadline = clock.timeout(5)
    clock.advance(3)
    assert deadline.when() == 5
    task = asyncio.create_task(_wait_under(deadline))
    await settle()
    clock.advance(2)
    with pytest.raises(TimeoutError):
        await task


async def _wait_under(deadline: Deadline) -> None:
    async with deadline:
        await asyncio.Event().wait()


async def test_a_deadline_already_past_fires_on_the_next_loop_iteration() -> None:
    clock = FakeClock()
    clock.advance(10)
    with pytest.raises(TimeoutError):
        async with clock.deadline(5):
            await asyncio.Event().wait()


async def test_no_deadline_never_fires() -> None:
    clock = FakeClock()
    async with clock.timeout(None) as deadline:
        clock.advance(1e9)
        await settle()
    assert deadline.when() is None and not deadline.expired()


async def test_a_rescheduled_deadline_fires_at_its_new_time() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    holder: list[Deadline] = []

    async def work() -> None:
        async with clock.timeout(5) as deadline:
            holder.append(deadline)
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    holder[0].reschedule(20)
    clock.advance(10)
    await settle()
    assert not task.done()
    clock.advance(10)
    with pytest.raises(TimeoutError):
        await task


async def test_a_deadline_is_entered_once_and_rescheduled_only_while_entered() -> None:
    clock = FakeClock()
    deadline = clock.timeout(5)
    with pytest.raises(RuntimeError):
        deadline.reschedule(6)
    async with deadline:
        pass
    with pytest.raises(RuntimeError):
        async with deadline:
            pass
    with pytest.raises(RuntimeError):
        deadline.reschedule(6)


async def test_an_inner_deadline_that_fires_leaves_the_outer_one_running() -> None:
    clock = FakeClock()
    async with clock.timeout(100) as outer:
        with pytest.raises(TimeoutError):
            async with clock.timeout(1) as inner:
                clock.advance(1)
                await asyncio.sleep(0)
        await settle()
    assert inner.expired() and not outer.expired()


async def test_an_outer_deadline_passes_through_the_inner_one() -> None:
    clock = FakeClock()
    inner_saw: list[type[BaseException]] = []
    with pytest.raises(TimeoutError):
        async with clock.timeout(1) as outer:
            try:
                async with clock.timeout(100) as inner:
                    clock.advance(1)
                    await asyncio.sleep(0)
            except BaseException as exc:
                inner_saw.append(type(exc))
                raise
    assert inner_saw == [asyncio.CancelledError]
    assert outer.expired() and not inner.expired()


async def test_a_cancellation_from_outside_stays_a_cancellation_when_the_deadline_fires_too(
        ) -> None:
    clock = FakeClock()
    started = asyncio.Event()

    async def work() -> None:
        async with clock.timeout(1):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    clock.advance(1)  # the deadline cancels the task...
    task.cancel()  # ...and so does its owner
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_cancellation_from_outside_passes_an_unexpired_deadline() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    holder: list[Deadline] = []

    async def work() -> None:
        async with clock.timeout(10) as deadline:
            holder.append(deadline)
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not holder[0].expired()


async def test_a_timed_out_task_is_not_left_cancelling() -> None:
    clock = FakeClock()
    with pytest.raises(TimeoutError):
        async with clock.timeout(1):
            clock.advance(2)
            await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and no cancellation is left pending


async def test_a_cancelled_fake_sleep_leaves_no_timer_behind() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(10)  # firing nothing: the sleeper's future is gone
    await settle()


async def test_many_cancelled_deadlines_do_not_pile_up() -> None:
    clock = FakeClock()
    for _ in range(1000):
        async with clock.timeout(3600):
            pass
    assert len(clock._timers._heap) < 200  # cancelled entries are dropped


def test_a_clock_does_not_go_back() -> None:
    with pytest.raises(ValueError):
        FakeClock().advance(-1)
    with pytest.raises(ValueError):
        JumpClock().advance(-1)


def test_fake_wall_time_follows_its_monotonic_time() -> None:
    start = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
    clock = FakeClock(start)
    clock.advance(90)
    assert clock.now() == start + datetime.timedelta(seconds=90)


# --------------------------------------------------------------------------- SystemClock


async def test_a_system_deadline_fires_in_real_time() -> None:
    clock = SystemClock()
    before = clock.monotonic()
    with pytest.raises(TimeoutError):
        async with clock.timeout(0.02) as deadline:
            await asyncio.Event().wait()
    assert deadline.expired()
    assert clock.monotonic() - before >= 0.02


async def test_a_system_sleep_takes_its_time() -> None:
    clock = SystemClock()
    before = clock.monotonic()
    await clock.sleep(0.02)
    assert clock.monotonic() - before >= 0.02


# --------------------------------------------------------------------------- JumpClock


async def test_a_jump_clock_follows_real_time() -> None:
    clock = JumpClock()
    before = clock.monotonic()
    await clock.sleep(0.02)
    assert clock.monotonic() - before >= 0.02
    with pytest.raises(TimeoutError):
        async with clock.timeout(0.02):
            await asyncio.Event().wait()


async def test_a_jump_wakes_the_sleepers_and_deadlines_it_reaches_at_once() -> None:
    clock = JumpClock()
    woke: list[str] = []
    started = asyncio.Event()

    async def sleeper() -> None:
        await clock.sleep(3600)
        woke.append("sleeper")

    async def bounded() -> None:
        try:
            async with clock.timeout(1800):
                started.set()
                await asyncio.Event().wait()
        except TimeoutError:
            woke.append("deadline")

    async def after() -> None:
        await clock.sleep(7200)
        woke.append("later")

    async with asyncio.TaskGroup() as group:
        group.create_task(sleeper())
        group.create_task(bounded())
        late = group.create_task(after())
        await started.wait()
        real = asyncio.get_running_loop().time()
        clock.advance(3600)
        await settle()
        assert woke == ["deadline", "sleeper"]
        assert asyncio.get_running_loop().time() - real < 1
        late.cancel()


async def test_a_jump_brings_later_timers_closer_by_its_length() -> None:
    clock = JumpClock()
    task = asyncio.create_task(clock.sleep(60.05))
    await settle()
    clock.advance(60)
    async with asyncio.timeout(5):  # the test's own bound, in real time
        await task
    assert task.done() and not task.cancelled()


def test_jump_wall_time_moves_with_the_jumps() -> None:
    clock = JumpClock()
    before = clock.now()
    clock.advance(3600)
    assert clock.now() - before >= datetime.timedelta(seconds=3600)
