"""Time, injected: the only module that reads the clock, sleeps or sets a deadline.

A ``Clock`` gives wall time (``now``, for timestamps written into objects), monotonic
time (``monotonic``, for delays, backoff and deadlines), ``sleep``, and deadlines:
``timeout(seconds)`` and ``deadline(at)`` are async context managers that cancel the
enclosed block when the clock reaches the deadline and then raise ``TimeoutError`` —
``asyncio.timeout``'s contract (``expired()``, ``reschedule()``, nesting, a cancellation
from outside stays a ``CancelledError``), on the clock's time instead of the loop's.

- ``SystemClock``: real time.
- ``FakeClock``: moves only when a test calls ``advance``; the sleepers and deadlines
  it reaches fire then, in time order.
- ``JumpClock``: real time that a test can ``advance`` (jump) forward, for tests that
  talk to real servers: everything keeps moving by itself (the kube client's throttle,
  polls), and a jump fires at once the sleepers and deadlines it reaches.

All three build ``sleep`` and the deadlines on one primitive, ``call_at`` (a callback at
a monotonic time, run on the running loop). A ``JumpClock`` keeps one loop timer, so it
serves one event loop at a time.
"""

from __future__ import annotations

import abc
import asyncio
import datetime
import enum
import heapq
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float | None) -> Deadline: ...

    def deadline(self, when: float | None) -> Deadline: ...


class Timer(Protocol):
    """A scheduled callback (``asyncio.Handle`` is one)."""

    def cancel(self) -> None: ...


class TimerClock(abc.ABC):
    """What every clock shares: ``sleep`` and the deadlines, on top of ``call_at``."""

    @abc.abstractmethod
    def now(self) -> datetime.datetime: ...

    @abc.abstractmethod
    def monotonic(self) -> float: ...

    @abc.abstractmethod
    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` on the running loop once ``monotonic()`` reaches ``when``
        (on the loop's next iteration when it already has)."""

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)  # a yield to the loop, as asyncio.sleep(0) is
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_at(self.monotonic() + seconds, wake)
        try:
            await woken
        finally:
            timer.cancel()

    def timeout(self, seconds: float | None) -> Deadline:
        """A deadline ``seconds`` from now (None: none); counted from this call."""
        return Deadline(self, None if seconds is None else self.monotonic() + seconds)

    def deadline(self, when: float | None) -> Deadline:
        """A deadline at the monotonic time ``when`` (None: none)."""
        return Deadline(self, when)


class _State(enum.Enum):
    CREATED = "created"
    ENTERED = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    EXITED = "finished"


class Deadline:
    """Cancels the block it encloses when its clock reaches ``when``; the block's
    ``CancelledError`` then leaves as ``TimeoutError``.

    As ``asyncio.Timeout``: the cancellation is counted on the task (``cancelling``),
    so only the deadline that cancelled turns it into ``TimeoutError`` — an enclosing
    deadline, or a cancellation from outside that arrived meanwhile, still sees the
    ``CancelledError``. ``expired()`` tells afterwards whether the deadline fired.
    """

    def __init__(self, clock: TimerClock, when: float | None) -> None:
        self._clock = clock
        self._when = when
        self._state = _State.CREATED
        self._timer: Timer | None = None
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0

    def when(self) -> float | None:
        return self._when

    def expired(self) -> bool:
        return self._state in (_State.EXPIRING, _State.EXPIRED)

    def reschedule(self, when: float | None) -> None:
        """Move the deadline (None: never) while the block runs."""
        if self._state is not _State.ENTERED:
            raise RuntimeError(f"cannot reschedule a deadline that is {self._state.value}")
        self._when = when
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._clock.call_at(when, self._expire)

    async def __aenter__(self) -> Deadline:
        if self._state is not _State.CREATED:
            raise RuntimeError("a deadline is entered once")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline is used inside a task")
        self._state = _State.ENTERED
        self._task = task
        self._cancelling = task.cancelling()
        self.reschedule(self._when)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._state is _State.EXPIRING:
            self._state = _State.EXPIRED
            assert self._task is not None
            # ours to handle only when no other cancellation was requested meanwhile
            if self._task.uncancel() <= self._cancelling and exc_type is not None \
                    and issubclass(exc_type, asyncio.CancelledError):
                raise TimeoutError from exc
        elif self._state is _State.ENTERED:
            self._state = _State.EXITED

    def _expire(self) -> None:
        self._timer = None
        if self._state is not _State.ENTERED:
            return
        assert self._task is not None
        self._task.cancel()
        self._state = _State.EXPIRING

    def __repr__(self) -> str:
        return f"<Deadline {self._state.value} when={self._when}>"


class _Timer:
    """One entry of a ``_Timers`` heap; ``cancel`` marks it (removed lazily)."""

    __slots__ = ("callback", "done", "owner", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callable[[], object],
                 owner: _Timers) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.owner = owner
        self.done = False

    def __lt__(self, other: _Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self.owner.cancelled_one()


class _Timers:
    """Callbacks by monotonic time, fired in time order (ties: in the order added)."""

    def __init__(self) -> None:
        self._heap: list[_Timer] = []
        self._seq = 0
        self._cancelled = 0

    def push(self, when: float, callback: Callable[[], object]) -> _Timer:
        self._seq += 1
        timer = _Timer(when, self._seq, callback, self)
        heapq.heappush(self._heap, timer)
        return timer

    def cancelled_one(self) -> None:
        self._cancelled += 1
        # drop cancelled entries once they are most of the heap (as asyncio's loop does)
        if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
            self._heap = [t for t in self._heap if not t.done]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def next_when(self) -> float | None:
        while self._heap and self._heap[0].done:
            heapq.heappop(self._heap)
            self._cancelled -= 1
        return self._heap[0].when if self._heap else None

    def fire_until(self, now: float) -> None:
        """Run the callbacks due at ``now``; one that a callback adds runs too when due."""
        while (when := self.next_when()) is not None and when <= now:
            timer = heapq.heappop(self._heap)
            timer.done = True
            timer.callback()


class SystemClock(TimerClock):
    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        loop = asyncio.get_running_loop()
        delay = when - self.monotonic()
        return loop.call_soon(callback) if delay <= 0 else loop.call_later(delay, callback)


class FakeClock(TimerClock):
    """A clock that moves only when told to; sleepers and deadlines fire when their time
    is reached."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._wall = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self._mono = 0.0
        self._timers = _Timers()

    def now(self) -> datetime.datetime:
        return self._wall + datetime.timedelta(seconds=self._mono)

    def monotonic(self) -> float:
        return self._mono

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        if when <= self._mono:
            return asyncio.get_running_loop().call_soon(callback)
        return self._timers.push(when, callback)

    def advance(self, seconds: float) -> None:
        """Move the clock forward; what falls due fires now (woken tasks run once the
        caller yields to the loop)."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._mono += seconds
        self._timers.fire_until(self._mono)


class JumpClock(TimerClock):
    """Real time plus the jumps a test made with ``advance``.

    Timers wait in real time (one loop timer armed for the earliest); a jump fires at
    once every sleeper and deadline it reaches, and brings the later ones closer by
    its length. Wall time (``now``) jumps too.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._timers = _Timers()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._alarm: asyncio.TimerHandle | None = None
        self._alarm_at = 0.0

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._offset)

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        loop = asyncio.get_running_loop()
        if when <= self.monotonic():
            return loop.call_soon(callback)
        self._loop = loop
        timer = self._timers.push(when, callback)
        self._arm()
        return timer

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds``; call it on the loop the clock serves."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._offset += seconds
        self._ring()

    def _ring(self) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self._timers.fire_until(self.monotonic())
        self._arm()

    def _arm(self) -> None:
        """Have a loop timer set for the earliest pending timer (reusing an early
        enough one)."""
        head = self._timers.next_when()
        if head is None or self._loop is None:
            return
        if self._alarm is not None:
            if self._alarm_at <= head:
                return
            self._alarm.cancel()
        self._alarm_at = head
        self._alarm = self._loop.call_later(max(0.0, head - self.monotonic()), self._ring)


def rfc3339(moment: datetime.datetime) -> str:
    """Kubernetes ``metav1.Time`` text: UTC, second precision."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: datetime.datetime) -> str:
    """Kubernetes ``metav1.MicroTime`` text."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def go_duration(nanos: int) -> str:
    """Render nanoseconds as Go's time.Duration.String() does ("1m30s", "1.5ms")."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    u = abs(nanos)

    def frac(value: int, digits: int) -> str:
        whole, rest = divmod(value, 10**digits)
        tail = f"{rest:0{digits}d}".rstrip("0")
        return f"{whole}.{tail}" if tail else str(whole)

    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{frac(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{frac(u, 6)}ms"
    seconds, rest = divmod(u, 1_000_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = frac(seconds * 1_000_000_000 + rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return f"{sign}{text}"


def format_duration(seconds: float) -> str:
    """Seconds as Go's ``time.Duration`` prints them, as Flux's messages show durations
    ("9m30s", "1.5s", "2h0m0s")."""
    return go_duration(round(seconds * 1_000_000_000))
