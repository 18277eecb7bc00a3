from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxd.clock import FakeClock
from fluxd.runtime.ratelimit import ItemExponentialFailure, MaxOf, TokenBucket


def test_exponential_failure_starts_at_the_flux_minimum_and_doubles() -> None:
    limiter = ItemExponentialFailure()
    assert [limiter.when("a") for _ in range(5)] == [0.75, 1.5, 3.0, 6.0, 12.0]
    assert limiter.num_requeues("a") == 5


def test_exponential_failure_is_capped_at_the_flux_maximum() -> None:
    limiter = ItemExponentialFailure()
    delays = [limiter.when("a") for _ in range(2000)]
    assert delays[9] == 384.0
    assert delays[10] == 768.0
    assert delays[11:] == [900.0] * (2000 - 11)


def test_forget_starts_the_backoff_over() -> None:
    limiter = ItemExponentialFailure(base=1.0, cap=60.0)
    limiter.when("a")
    limiter.when("a")
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == 1.0


def test_each_item_backs_off_on_its_own() -> None:
    limiter = ItemExponentialFailure()
    limiter.when("a")
    limiter.when("a")
    assert limiter.when("b") == 0.75
    assert limiter.num_requeues("a") == 2


@given(st.floats(0.001, 100), st.floats(0, 10_000), st.integers(1, 200))
def test_exponential_delays_never_shrink_and_never_pass_the_cap(
        base: float, extra: float, tries: int) -> None:
    limiter = ItemExponentialFailure(base=base, cap=base + extra)
    delays = [limiter.when("a") for _ in range(tries)]
    assert delays == sorted(delays)
    assert all(base <= delay <= base + extra for delay in delays)


def test_exponential_failure_rejects_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError):
        ItemExponentialFailure(base=10, cap=1)


def test_token_bucket_allows_a_burst_then_spaces_retries_at_its_rate() -> None:
    bucket = TokenBucket(qps=10, burst=3, clock=FakeClock())
    assert [bucket.when("x") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)


def test_token_bucket_refills_as_the_clock_moves_but_saves_at_most_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(qps=2, burst=2, clock=clock)
    bucket.when("x")
    bucket.when("x")
    assert bucket.when("x") == pytest.approx(0.5)  # reserved: the bucket is in debt
    clock.advance(1.0)  # two tokens: one pays the debt, one is free
    assert bucket.when("x") == 0.0
    assert bucket.when("x") == pytest.approx(0.5)
    clock.advance(3600)
    assert [bucket.when("x") for _ in range(2)] == [0.0, 0.0]
    assert bucket.when("x") == pytest.approx(0.5)


def test_token_bucket_tracks_no_items() -> None:
    bucket = TokenBucket(qps=1, burst=1, clock=FakeClock())
    bucket.when("x")
    bucket.forget("x")
    assert bucket.num_requeues("x") == 0


def test_token_bucket_rejects_a_rate_or_burst_that_allows_nothing() -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps=0, burst=1, clock=FakeClock())
    with pytest.raises(ValueError):
        TokenBucket(qps=1, burst=0, clock=FakeClock())


def test_max_of_waits_for_the_slowest_policy_and_every_policy_counts_the_retry() -> None:
    clock = FakeClock()
    exponential = ItemExponentialFailure(base=0.01, cap=100)
    bucket = TokenBucket(qps=1, burst=2, clock=clock)
    limiter = MaxOf(exponential, bucket)
    assert limiter.when("a") == 0.01
    assert limiter.when("a") == 0.02
    assert limiter.when("a") == pytest.approx(1.0)  # the bucket is empty now
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert exponential.num_requeues("a") == 0


def test_max_of_needs_a_policy() -> None:
    with pytest.raises(ValueError):
        MaxOf()
