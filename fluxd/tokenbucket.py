"""Token buckets: fluxd's one rate-limiting mechanism.

A bucket holds at most ``burst`` tokens, gains one every ``every`` seconds (a rate of
``1 / every`` a second) and starts full. Time is ``monotonic()``, the injected clock's, so
tests advance a fake clock instead of waiting. The verbs:

- ``take()``: take a token if there is one; False (and nothing taken) otherwise —
  client-go's ``TryAccept``, for callers that drop or refuse what is over the limit;
- ``reserve()``: take a token even on credit and answer the seconds until it is really
  there — the delay of ``rate.Limiter.Reserve``, for callers that wait their turn; a
  burst of callers is spread out at the rate rather than refused;
- ``ready()``: whether ``take()`` would succeed now, taking nothing.

``TokenBuckets`` keeps a bucket per key (a path, an object), at most ``max_keys`` of them:
the least recently used key is forgotten first, and a forgotten key starts full again —
which is all a full bucket is, so full buckets are forgotten early, a few per call.

The level is kept as the tokens left when some were last taken, plus when that was;
what has refilled since is computed from that moment alone (``elapsed / every``).
Looking without taking stores nothing, so a one-token bucket refilled every ``w``
seconds admits exactly ``w`` seconds after its last admission, however often it was
asked in between.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from fluxd.lru import LRU

__all__ = ["TokenBucket", "TokenBuckets"]

K = TypeVar("K", bound=Hashable)

#: full buckets looked at (and forgotten) per call of ``TokenBuckets``: bounded work
_SWEEP = 16


class _Level:
    """Tokens left after the last take, and its time."""

    __slots__ = ("since", "tokens")

    def __init__(self, tokens: float, since: float) -> None:
        self.tokens = tokens
        self.since = since


def _check(burst: int, every: float) -> None:
    if burst < 1 or not every > 0:
        raise ValueError(f"need burst >= 1 and every > 0, got burst={burst} every={every}")


def _tokens(level: _Level, now: float, burst: int, every: float) -> float:
    return min(float(burst), level.tokens + (now - level.since) / every)


class TokenBucket:
    """One bucket (see the module docstring)."""

    __slots__ = ("_level", "_monotonic", "burst", "every")

    def __init__(self, *, burst: int, every: float, monotonic: Callable[[], float]) -> None:
        _check(burst, every)
        self.burst = burst
        self.every = every
        self._monotonic = monotonic
        self._level = _Level(float(burst), monotonic())

    def set_limits(self, *, burst: int, every: float) -> None:
        """Change the limits in place (a configuration reload): what refilled so far
        counts at the old rate, what refills from now on at the new one."""
        _check(burst, every)
        now = self._monotonic()
        self._level = _Level(min(float(burst), self.tokens()), now)
        self.burst, self.every = burst, every

    def tokens(self) -> float:
        """Tokens there now; below zero while reservations are in debt."""
        return _tokens(self._level, self._monotonic(), self.burst, self.every)

    def ready(self) -> bool:
        return self.tokens() >= 1.0

    def take(self) -> bool:
        now = self._monotonic()
        tokens = _tokens(self._level, now, self.burst, self.every)
        if tokens < 1.0:
            return False
        self._level = _Level(tokens - 1.0, now)
        return True

    def reserve(self) -> float:
        now = self._monotonic()
        tokens = _tokens(self._level, now, self.burst, self.every) - 1.0
        self._level = _Level(tokens, now)
        # a negative level is a debt, paid off at one token every ``every`` seconds
        return 0.0 if tokens >= 0.0 else -tokens * self.every


class TokenBuckets(Generic[K]):
    """A bucket per key, all with the same limits (see the module docstring)."""

    __slots__ = ("_levels", "_monotonic", "burst", "every")

    def __init__(self, *, burst: int, every: float, monotonic: Callable[[], float],
                 max_keys: int = 4096) -> None:
        _check(burst, every)
        self.burst = burst
        self.every = every
        self._monotonic = monotonic
        self._levels: LRU[K, _Level] = LRU(max_keys)

    def ready(self, key: K) -> bool:
        """Whether ``key`` has a token now (none is taken)."""
        now = self._monotonic()
        level = self._levels.get(key)
        self._sweep(now)
        return level is None or _tokens(level, now, self.burst, self.every) >= 1.0

    def take(self, key: K) -> bool:
        """Take a token for ``key``; False when there is none."""
        now = self._monotonic()
        level = self._levels.get(key)
        tokens = float(self.burst) if level is None else \
            _tokens(level, now, self.burst, self.every)
        if tokens >= 1.0:
            self._levels.put(key, _Level(tokens - 1.0, now))
        self._sweep(now)
        return tokens >= 1.0

    def _sweep(self, now: float) -> None:
        """Forget the least recently used buckets that are full again."""
        for _ in range(_SWEEP):
            oldest = self._levels.oldest()
            if oldest is None or _tokens(oldest[1], now, self.burst, self.every) < self.burst:
                return
            self._levels.pop(oldest[0])

    def __len__(self) -> int:
        """Keys remembered (those whose bucket is not known to be full)."""
        return len(self._levels)
