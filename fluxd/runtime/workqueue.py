"""One work queue shared by every controller in the process.

Items are ``ObjectKey``s; a key's ``kind`` picks its lane, and each controller's workers
call ``get(kind)`` for their own kind. The contract:

- Fair: within a kind, keys are handed out in the order they became due; kinds never wait
  for one another.
- Stingy: a key is queued at most once however often it is added, and is never handed to
  two workers at once. A key added while it is being processed is queued again, once,
  when ``done(key)`` is called.
- Two priorities: low-priority adds (an informer's initial list) are handed out only when
  no normal key of the same kind is waiting. A normal add promotes a waiting low key; a
  key keeps the highest priority it was added with.
- Delayed: ``add_after(key, seconds)`` makes the key due later. Of several pending delays
  the earliest wins; a key already due ignores them; a plain ``add`` supersedes a pending
  delay. ``add_rate_limited`` delays by the rate limiter's answer; ``forget`` resets it.
- Bounded per kind: at most ``kind_limit(kind)`` keys of a kind are in processing at once,
  however many workers call ``get``; ``set_kind_limit`` changes that while running.
- Shutdown: ``shut_down()`` refuses new keys, drops pending delays and makes every ``get``
  return None at once. ``shut_down_with_drain(timeout)`` refuses new keys too, but keeps
  handing out keys already due until the kind is empty, and returns once nothing is due
  or in processing, or when the timeout passes; then it is a plain shutdown.
- Time: delays and drain timeouts are measured by the injected ``Clock``. Delayed adds
  fire only while ``run()`` is running; its owner runs it in a task group.

Workers must call ``done(key)`` for every key ``get`` returned, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

from fluxd.clock import Clock
from fluxd.runtime.ratelimit import ItemExponentialFailure, RateLimiter
from fluxd.runtime.reconcile import ObjectKey


class QueueMetrics(Protocol):
    """What the queue reports as it goes; gauges come from ``WorkQueue.stats()``."""

    def added(self, kind: str) -> None:
        """A key became due (adds folded into a key already due are not counted)."""

    def retried(self, kind: str) -> None:
        """``add_after`` or ``add_rate_limited`` was called."""

    def queued_for(self, kind: str, seconds: float) -> None:
        """A key was handed out ``seconds`` after it became due."""

    def worked_for(self, kind: str, seconds: float) -> None:
        """A key was done ``seconds`` after it was handed out."""


class _NoMetrics:
    def added(self, kind: str) -> None:
        pass

    def retried(self, kind: str) -> None:
        pass

    def queued_for(self, kind: str, seconds: float) -> None:
        pass

    def worked_for(self, kind: str, seconds: float) -> None:
        pass


@dataclass(frozen=True)
class KindStats:
    """One kind's lane at one moment.

    ``depth`` counts keys that are due and not yet handed out, including keys waiting for
    their current run to finish; ``depth_low`` is the low-priority part of ``depth``.
    Delayed keys are not counted until they are due.
    """

    depth: int
    depth_low: int
    processing: int
    unfinished_seconds: float
    longest_running_seconds: float


class _Lane:
    """The state of one kind."""

    __slots__ = ("due", "due_low", "limit", "parked", "processing", "waiters")

    def __init__(self, limit: int) -> None:
        # key -> monotonic time it became due; insertion order is hand-out order
        self.due: OrderedDict[ObjectKey, float] = OrderedDict()
        self.due_low: OrderedDict[ObjectKey, float] = OrderedDict()
        # due again while in processing: key -> (time it became due, low priority)
        self.parked: dict[ObjectKey, tuple[float, bool]] = {}
        # handed out, not yet done: key -> monotonic time handed out
        self.processing: dict[ObjectKey, float] = {}
        # getters waiting, first come first served; each gets a key or None
        self.waiters: deque[asyncio.Future[ObjectKey | None]] = deque()
        self.limit = limit

    def holds_work(self) -> bool:
        return bool(self.due or self.due_low or self.parked)


def _check_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"a kind limit must be at least 1, got {limit}")
    return limit


class WorkQueue:
    """The shared queue; see the module docstring for its contract."""

    def __init__(self, *, clock: Clock, kind_limits: Mapping[str, int] | None = None,
                 default_kind_limit: int = 1, rate_limiter: RateLimiter | None = None,
                 metrics: QueueMetrics | None = None) -> None:
        self._clock = clock
        self._default_limit = _check_limit(default_kind_limit)
        self._rate_limiter: RateLimiter = (
            rate_limiter if rate_limiter is not None else ItemExponentialFailure())
        self._metrics: QueueMetrics = metrics if metrics is not None else _NoMetrics()
        self._lanes: dict[str, _Lane] = {
            kind: _Lane(_check_limit(limit)) for kind, limit in (kind_limits or {}).items()}
        # pending delayed adds: key -> monotonic time due; the heap may hold stale entries,
        # which are skipped when they no longer match this map
        self._delayed: dict[ObjectKey, float] = {}
        self._heap: list[tuple[float, ObjectKey]] = []
        self._timer: anyio.CancelScope | None = None
        self._timer_at = math.inf
        self._running = False
        self._shutting_down = False
        self._draining = False
        self._drain_scopes: list[anyio.CancelScope] = []

    # ---- adding ------------------------------------------------------------------------

    def add(self, key: ObjectKey, *, low_priority: bool = False) -> None:
        """Mark ``key`` as needing processing now."""
        if self._shutting_down:
            return
        if self._delayed.pop(key, None) is not None:
            low_priority = False  # a delayed add is a normal one, and keys keep the highest
        self._make_due(key, low_priority)

    def add_after(self, key: ObjectKey, delay: float) -> None:
        """Mark ``key`` as needing processing in ``delay`` seconds (now if ``delay <= 0``)."""
        if self._shutting_down:
            return
        self._metrics.retried(key.kind)
        if delay <= 0:
            self.add(key)
            return
        lane = self._lane(key.kind)
        if key in lane.due or key in lane.due_low or key in lane.parked:
            return  # already due, which is sooner
        ready_at = self._clock.monotonic() + delay
        current = self._delayed.get(key)
        if current is not None and current <= ready_at:
            return
        self._delayed[key] = ready_at
        heapq.heappush(self._heap, (ready_at, key))
        if len(self._heap) > 2 * len(self._delayed) + 64:
            self._heap = [(at, k) for k, at in self._delayed.items()]
            heapq.heapify(self._heap)
        if ready_at < self._timer_at and self._timer is not None:
            self._timer.cancel()  # run() sleeps too long now; let it look again

    def add_rate_limited(self, key: ObjectKey) -> None:
        """Retry ``key`` after the rate limiter's delay (growing with each retry)."""
        if self._shutting_down:
            return
        self.add_after(key, self._rate_limiter.when(key))

    def forget(self, key: ObjectKey) -> None:
        """``key`` succeeded: its next retry starts from the shortest delay again."""
        self._rate_limiter.forget(key)

    def num_requeues(self, key: ObjectKey) -> int:
        return self._rate_limiter.num_requeues(key)

    # ---- handing out ---------------------------------------------------------------------

    async def get(self, kind: str) -> ObjectKey | None:
        """The next key of ``kind`` to process, waiting for one; None once shut down."""
        lane = self._lane(kind)
        if self._shutting_down and not (self._draining and lane.holds_work()):
            return None
        if len(lane.processing) < lane.limit:
            key = self._take(lane)
            if key is not None:
                return key
        waiter: asyncio.Future[ObjectKey | None] = asyncio.get_running_loop().create_future()
        lane.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                if waiter in lane.waiters:
                    lane.waiters.remove(waiter)
            else:
                handed = waiter.result()
                if handed is not None:  # handed over, but nobody will process it
                    self._give_back(lane, handed)
            raise

    def done(self, key: ObjectKey) -> None:
        """Processing of ``key`` finished; queue it again if it was added meanwhile.

        A key that is not in processing is ignored.
        """
        lane = self._lanes.get(key.kind)
        if lane is None:
            return
        started = lane.processing.pop(key, None)
        if started is None:
            return
        self._metrics.worked_for(key.kind, self._clock.monotonic() - started)
        parked = lane.parked.pop(key, None)
        if parked is not None:
            added_at, low = parked
            (lane.due_low if low else lane.due)[key] = added_at
        if lane.waiters:
            self._dispatch(lane)
        if self._shutting_down:
            if not lane.holds_work():
                self._release_waiters(lane)
            if self._draining and self._is_drained():
                for scope in self._drain_scopes:
                    scope.cancel()

    # ---- limits --------------------------------------------------------------------------

    def kind_limit(self, kind: str) -> int:
        return self._lane(kind).limit

    def set_kind_limit(self, kind: str, limit: int) -> None:
        """Change how many keys of ``kind`` may be in processing at once.

        Lowering it lets running work finish; nothing queued is dropped.
        """
        lane = self._lane(kind)
        lane.limit = _check_limit(limit)
        if lane.waiters:
            self._dispatch(lane)

    # ---- delays --------------------------------------------------------------------------

    async def run(self) -> None:
        """Fire delayed adds when due, until the queue shuts down."""
        if self._running:
            raise RuntimeError("WorkQueue.run() is already running")
        self._running = True
        try:
            while not self._shutting_down:
                self._fire_due()
                with anyio.CancelScope() as timer:
                    self._timer = timer
                    if self._heap:
                        self._timer_at = self._heap[0][0]
                        await self._clock.sleep(self._timer_at - self._clock.monotonic())
                    else:
                        self._timer_at = math.inf
                        await anyio.sleep_forever()
                self._timer = None
        finally:
            self._timer = None
            self._timer_at = math.inf
            self._running = False

    def _fire_due(self) -> None:
        now = self._clock.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            ready_at, key = heapq.heappop(heap)
            if self._delayed.get(key) == ready_at:
                del self._delayed[key]
                self._make_due(key, False)

    # ---- shutdown ------------------------------------------------------------------------

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def shut_down(self) -> None:
        """Refuse new keys and make every ``get`` return None now."""
        self._shutting_down = True
        self._draining = False
        self._drop_delays()
        for lane in self._lanes.values():
            self._release_waiters(lane)
        for scope in self._drain_scopes:
            scope.cancel()

    # The timeout is on the injected clock, which a caller's anyio.fail_after cannot use.
    async def shut_down_with_drain(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Refuse new keys; wait until all due and running work is done.

        Waits at most ``timeout`` seconds (None: no bound), then shuts down. Returns whether
        the queue drained. Calling ``shut_down()`` meanwhile ends the wait.
        """
        if not self._shutting_down:
            self._shutting_down = True
            self._draining = True
            self._drop_delays()
            for lane in self._lanes.values():
                if not lane.holds_work():
                    self._release_waiters(lane)
        if self._draining and not self._is_drained():
            with anyio.CancelScope() as scope:
                self._drain_scopes.append(scope)
                try:
                    if timeout is None:
                        await anyio.sleep_forever()
                    else:
                        await self._clock.sleep(timeout)
                finally:
                    self._drain_scopes.remove(scope)
        drained = self._is_drained()
        self.shut_down()
        return drained

    def _drop_delays(self) -> None:
        self._delayed.clear()
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _is_drained(self) -> bool:
        return not any(lane.processing or lane.holds_work() for lane in self._lanes.values())

    # ---- observing -----------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(self.depth(kind) for kind in self._lanes)

    def depth(self, kind: str) -> int:
        """Keys of ``kind`` due and not yet handed out (see ``KindStats``)."""
        lane = self._lanes.get(kind)
        if lane is None:
            return 0
        return len(lane.due) + len(lane.due_low) + len(lane.parked)

    def stats(self) -> dict[str, KindStats]:
        """A snapshot per kind, for a metrics collector at scrape time."""
        now = self._clock.monotonic()
        result: dict[str, KindStats] = {}
        for kind, lane in self._lanes.items():
            ages = [now - started for started in lane.processing.values()]
            low = len(lane.due_low) + sum(1 for _, is_low in lane.parked.values() if is_low)
            result[kind] = KindStats(
                depth=self.depth(kind), depth_low=low, processing=len(lane.processing),
                unfinished_seconds=sum(ages), longest_running_seconds=max(ages, default=0.0))
        return result

    # ---- internals -----------------------------------------------------------------------

    def _lane(self, kind: str) -> _Lane:
        lane = self._lanes.get(kind)
        if lane is None:
            lane = self._lanes[kind] = _Lane(self._default_limit)
        return lane

    def _make_due(self, key: ObjectKey, low: bool) -> None:
        lane = self._lane(key.kind)
        if key in lane.due:
            return
        if key in lane.due_low:
            if not low:
                lane.due[key] = lane.due_low.pop(key)  # promoted: joins the normal line
            return
        parked = lane.parked.get(key)
        if parked is not None:
            if parked[1] and not low:
                lane.parked[key] = (parked[0], False)
            return
        now = self._clock.monotonic()
        self._metrics.added(key.kind)
        if key in lane.processing:
            lane.parked[key] = (now, low)
            return
        (lane.due_low if low else lane.due)[key] = now
        if lane.waiters:
            self._dispatch(lane)

    def _take(self, lane: _Lane) -> ObjectKey | None:
        """Move the next due key of ``lane`` into processing (the caller checked the limit)."""
        if lane.due:
            key, added_at = lane.due.popitem(last=False)
        elif lane.due_low:
            key, added_at = lane.due_low.popitem(last=False)
        else:
            return None
        now = self._clock.monotonic()
        lane.processing[key] = now
        self._metrics.queued_for(key.kind, now - added_at)
        return key

    def _dispatch(self, lane: _Lane) -> None:
        """Hand due keys straight to waiting getters, as far as the limit allows."""
        waiters = lane.waiters
        while waiters and len(lane.processing) < lane.limit:
            if waiters[0].done():
                waiters.popleft()
                continue
            key = self._take(lane)
            if key is None:
                return
            waiters.popleft().set_result(key)

    def _give_back(self, lane: _Lane, key: ObjectKey) -> None:
        """Undo a hand-over whose getter was cancelled: the key goes to the front again."""
        lane.processing.pop(key, None)
        parked = lane.parked.pop(key, None)
        lane.due[key] = parked[0] if parked is not None else self._clock.monotonic()
        lane.due.move_to_end(key, last=False)
        if lane.waiters:
            self._dispatch(lane)

    def _release_waiters(self, lane: _Lane) -> None:
        while lane.waiters:
            waiter = lane.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
