"""fluxd.tokenbucket: the one rate-limiting mechanism, on a fake clock."""

from __future__ import annotations

import pytest

from fluxd.clock import FakeClock
from fluxd.tokenbucket import TokenBucket, TokenBuckets


def test_a_bucket_starts_full_and_refuses_once_its_burst_is_taken() -> None:
    clock = FakeClock()
    bucket = TokenBucket(burst=3, every=0.5, monotonic=clock.monotonic)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert not bucket.ready()
    clock.advance(0.5)
    assert bucket.ready()
    assert bucket.take()
    assert not bucket.take()


def test_a_bucket_saves_at_most_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(burst=2, every=1.0, monotonic=clock.monotonic)
    bucket.take()
    clock.advance(3600)
    assert bucket.tokens() == 2.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_reservations_go_into_debt_and_say_how_long_to_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(burst=1, every=0.25, monotonic=clock.monotonic)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 0.25
    assert bucket.reserve() == 0.5
    assert bucket.tokens() == -2.0
    assert not bucket.take()  # a debt is paid before anyone takes for free
    clock.advance(0.75)
    assert bucket.reserve() == 0.0


def test_a_one_token_bucket_admits_exactly_its_interval_after_the_last_admission() -> None:
    # however often it is asked in between: looking stores nothing, so no rounding
    # from partial refills can move the moment
    clock = FakeClock()
    bucket = TokenBucket(burst=1, every=49.0, monotonic=clock.monotonic)
    assert bucket.take()
    for _ in range(7):
        clock.advance(7.0)
        assert bucket.take() is (clock.monotonic() >= 49.0)


def test_new_limits_apply_from_now_on() -> None:
    clock = FakeClock()
    bucket = TokenBucket(burst=1, every=10.0, monotonic=clock.monotonic)
    bucket.take()
    clock.advance(5.0)  # half a token at the old rate
    bucket.set_limits(burst=4, every=1.0)
    assert bucket.tokens() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.take()
    clock.advance(100.0)
    assert bucket.tokens() == 4.0


def test_limits_that_allow_nothing_are_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError):
        TokenBucket(burst=0, every=1.0, monotonic=clock.monotonic)
    with pytest.raises(ValueError):
        TokenBucket(burst=1, every=0.0, monotonic=clock.monotonic)
    with pytest.raises(ValueError):
        TokenBuckets(burst=1, every=-1.0, monotonic=clock.monotonic)


def test_keyed_buckets_count_each_key_on_its_own() -> None:
    clock = FakeClock()
    buckets: TokenBuckets[str] = TokenBuckets(burst=2, every=1.0, monotonic=clock.monotonic)
    assert [buckets.take("a") for _ in range(3)] == [True, True, False]
    assert buckets.ready("b") and buckets.take("b")
    assert not buckets.ready("a")
    clock.advance(1.0)
    assert buckets.take("a") and not buckets.take("a")


def test_asking_about_a_key_that_never_took_remembers_nothing() -> None:
    clock = FakeClock()
    buckets: TokenBuckets[str] = TokenBuckets(burst=1, every=1.0, monotonic=clock.monotonic)
    assert all(buckets.ready(f"k{i}") for i in range(100))
    assert len(buckets) == 0


def test_keyed_buckets_forget_full_buckets_and_the_least_recently_used_keys() -> None:
    clock = FakeClock()
    buckets: TokenBuckets[str] = TokenBuckets(burst=1, every=10.0, monotonic=clock.monotonic,
                                              max_keys=100)
    for i in range(1000):
        assert buckets.take(f"k{i}")
        clock.advance(1.0)
    # only the keys of the last ten seconds still have an empty bucket
    assert len(buckets) <= 11
    for i in range(300):
        buckets.take(f"burst{i}")
    assert len(buckets) == 100
    # a forgotten key starts full again
    assert buckets.take("burst0")
