"""Retry policies for the work queue: small objects that say how long an item should wait.

A ``RateLimiter`` answers ``when(item)`` with a delay in seconds and records that the item
is being retried; ``forget(item)`` clears that record once the item succeeds, and
``num_requeues(item)`` reports it. Policies compose: ``MaxOf`` waits for the slowest of
several. Anything that depends on time takes a ``Clock``.

Flux's controllers retry with ``ItemExponentialFailure`` alone (``--min-retry-delay`` 750 ms,
``--max-retry-delay`` 15 min), which is this module's default.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from fluxd import tokenbucket
from fluxd.clock import Clock

#: Beyond this many doublings every sensible base has passed every sensible cap; stopping
#: here keeps ``2 ** n`` from overflowing a float.
_MAX_DOUBLINGS = 64


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds the item should wait before its next try; counts as a retry."""
        ...

    def forget(self, item: Hashable) -> None:
        """The item succeeded: stop tracking it."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many times the item has been retried since it was last forgotten."""
        ...


class ItemExponentialFailure:
    """Per item: ``base * 2 ** failures`` seconds, at most ``cap``."""

    def __init__(self, base: float = 0.75, cap: float = 900.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError(f"need 0 < base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures >= _MAX_DOUBLINGS:
            return self.cap
        return min(self.base * 2.0**failures, self.cap)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class TokenBucket:
    """Overall: ``qps`` tokens a second, up to ``burst`` saved; each retry takes one.

    ``when`` reserves a token and answers how long until it is actually available, so a
    burst of retries is spread out instead of refused. The bucket starts full.
    """

    def __init__(self, qps: float, burst: int, clock: Clock) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"need qps > 0 and burst >= 1, got qps={qps} burst={burst}")
        self.qps = qps
        self.burst = burst
        self._bucket = tokenbucket.TokenBucket(burst=burst, every=1.0 / qps,
                                               monotonic=clock.monotonic)

    def when(self, item: Hashable) -> float:
        return self._bucket.reserve()

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOf:
    """The longest delay of several policies; every one of them records the retry."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOf needs at least one rate limiter")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max([limiter.when(item) for limiter in self.limiters])

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)
