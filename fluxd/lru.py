"""A bounded mapping that forgets what was used least recently: fluxd's one cache.

Contract:

- ``LRU(max_size)`` holds at most ``max_size`` entries. With ``weigh`` it holds entries
  whose weights add up to at most ``max_size`` instead (bytes, say); an entry heavier
  than that on its own is not kept, and it takes the older value under its key with it.
- ``get`` and ``put`` make an entry the most recently used; ``peek`` reads without doing
  so, for owners whose order is "oldest written first" rather than "least used first".
- When room is wanted, the least recently used entries go first. ``put`` returns what
  went, so an owner can release what it tied to those keys.
- ``oldest()`` shows the entry that would go next, for owners that also expire entries
  by age and stop at the first one still fresh.
- A value of ``None`` cannot be told from a missing key: store something else.

Not thread-safe: an LRU belongs to one owner on one thread (the event loop's, or a
worker's under the owner's lock).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """See the module docstring."""

    __slots__ = ("_data", "_weigh", "_weight", "max_size")

    def __init__(self, max_size: int, *, weigh: Callable[[V], int] | None = None) -> None:
        if max_size < 1:
            raise ValueError(f"an LRU needs room for something, got max_size={max_size}")
        self.max_size = max_size
        self._weigh = weigh
        self._weight = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value under ``key`` (now the most recently used), or None."""
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value under ``key``, or None; its place in the order stays."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Store ``value`` as the most recently used; returns the entries dropped to make
        room (``(key, value)`` itself when it alone is heavier than ``max_size``)."""
        self.pop(key)
        weight = self._weight_of(value)
        if weight > self.max_size:
            return [(key, value)]
        self._data[key] = value
        self._weight += weight
        dropped: list[tuple[K, V]] = []
        while self._weight > self.max_size:
            old_key, old = self._data.popitem(last=False)
            self._weight -= self._weight_of(old)
            dropped.append((old_key, old))
        return dropped

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None when there was none."""
        value = self._data.pop(key, None)
        if value is not None:
            self._weight -= self._weight_of(value)
        return value

    def oldest(self) -> tuple[K, V] | None:
        """The least recently used entry (the next to go), or None when empty."""
        for key, value in self._data.items():
            return key, value
        return None

    @property
    def weight(self) -> int:
        """What the entries weigh together (their number without ``weigh``)."""
        return self._weight

    def clear(self) -> None:
        self._data.clear()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        """Keys from the least to the most recently used."""
        return iter(self._data)

    def _weight_of(self, value: V) -> int:
        return 1 if self._weigh is None else self._weigh(value)
