"""The per-receiver token bucket (``rate_limit``): pure, time passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stormwatch.agents.core.notify_config import RateLimitConfig
from stormwatch.agents.core.notify_ratelimit import TokenBucket


def test_a_full_bucket_lets_a_burst_through_then_paces() -> None:
    bucket = TokenBucket.of(RateLimitConfig(per_second=2, burst=3))
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0) == 500  # one token every 500 ms
    assert bucket.take(499) == 1
    assert bucket.take(500) == 0
    assert bucket.wait_ms(500) == 500  # asking takes nothing
    assert bucket.wait_ms(500) == 500


def test_idle_time_refills_up_to_the_burst_only() -> None:
    bucket = TokenBucket(per_second=10, burst=2)
    assert bucket.take(0) == 0 and bucket.take(0) == 0 and bucket.take(0) > 0
    assert bucket.take(3_600_000) == 0 and bucket.take(3_600_000) == 0
    assert bucket.take(3_600_000) == 100


def test_a_clock_that_steps_back_does_not_refill() -> None:
    bucket = TokenBucket(per_second=1, burst=1)
    assert bucket.take(10_000) == 0
    assert bucket.take(5_000) == 1000
    assert bucket.take(10_999) == 1 and bucket.take(11_000) == 0


def test_invalid_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(per_second=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucket(per_second=1, burst=0)


@given(
    st.floats(min_value=0.1, max_value=1000),
    st.integers(min_value=1, max_value=50),
    st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=200),
)
@example(per_second=1.9999999999998863, burst=1, steps=[0])  # refills summing to a hair under 1 token
def test_never_more_than_burst_plus_rate_times_time(per_second: float, burst: int, steps: list[int]) -> None:
    """Over any run, messages sent <= burst + per_second * elapsed (the bucket's promise)."""
    bucket = TokenBucket(per_second=per_second, burst=burst)
    now = sent = 0
    for step in steps:
        now += step
        while bucket.take(now) == 0:
            sent += 1
        wait = bucket.wait_ms(now)
        assert wait >= 1
        assert replace(bucket).wait_ms(now + wait) == 0  # the wait it names is enough (asked of a copy)
    assert sent <= burst + per_second * now / 1000 + 1e-6
