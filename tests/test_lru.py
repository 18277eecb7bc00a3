"""fluxd.lru: the one bounded cache."""

from __future__ import annotations

import pytest

from fluxd.lru import LRU


def test_the_least_recently_used_entry_goes_first_and_put_says_what_went() -> None:
    cache: LRU[str, int] = LRU(2)
    assert cache.put("a", 1) == []
    assert cache.put("b", 2) == []
    assert cache.get("a") == 1  # "b" is now the least recently used
    assert cache.put("c", 3) == [("b", 2)]
    assert list(cache) == ["a", "c"]
    assert "b" not in cache and len(cache) == 2


def test_peek_reads_without_changing_the_order() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    assert cache.put("c", 3) == [("a", 1)]  # written first, gone first
    assert cache.peek("a") is None


def test_putting_a_key_again_replaces_its_value_and_makes_it_the_newest() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.put("a", 10) == []
    assert cache.oldest() == ("b", 2)
    assert cache.get("a") == 10 and len(cache) == 2


def test_weighed_entries_are_bounded_by_their_total_weight() -> None:
    cache: LRU[str, bytes] = LRU(10, weigh=len)
    cache.put("a", b"xxxx")
    cache.put("b", b"yyyy")
    assert cache.weight == 8
    assert cache.put("c", b"zzzz") == [("a", b"xxxx")]
    assert cache.weight == 8
    assert cache.put("d", b"w" * 9) == [("b", b"yyyy"), ("c", b"zzzz")]
    assert list(cache) == ["d"] and cache.weight == 9


def test_an_entry_heavier_than_the_cache_is_not_kept_and_takes_its_old_value_along() -> None:
    cache: LRU[str, bytes] = LRU(10, weigh=len)
    cache.put("a", b"small")
    cache.put("b", b"tiny")
    assert cache.put("a", b"x" * 11) == [("a", b"x" * 11)]
    assert list(cache) == ["b"] and cache.weight == 4


def test_pop_oldest_and_clear() -> None:
    cache: LRU[str, int] = LRU(3)
    assert cache.oldest() is None
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.pop("a") == 1
    assert cache.pop("a") is None
    assert cache.oldest() == ("b", 2)
    cache.clear()
    assert len(cache) == 0 and cache.weight == 0


def test_an_lru_needs_room_for_something() -> None:
    with pytest.raises(ValueError):
        LRU(0)
