"""The token bucket behind local rate limiting: a burst at once, then the steady rate."""

import math

import pytest

from mycelium.errors import ConfigError
from mycelium.token_bucket import TokenBucket


def test_a_full_bucket_admits_its_burst_at_once_and_then_refuses() -> None:
    bucket = TokenBucket(rate_per_second=10.0, burst=5)
    assert [bucket.try_take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.retry_after(0.0) == pytest.approx(0.1)
    assert bucket.try_take(0.1)


def test_steady_traffic_is_admitted_at_the_rate() -> None:
    bucket = TokenBucket(rate_per_second=100.0, burst=20)
    # Offered 1,000 requests per second for 10 s: the burst plus 100 a second get in.
    admitted = sum(bucket.try_take(i / 1000) for i in range(10_000))
    assert admitted == pytest.approx(20 + 100 * 10, abs=2)


def test_traffic_below_the_rate_is_never_refused() -> None:
    bucket = TokenBucket(rate_per_second=10.0, burst=1)
    assert all(bucket.try_take(i * 0.11) for i in range(1000))


def test_a_quiet_spell_refills_no_more_than_the_burst() -> None:
    bucket = TokenBucket(rate_per_second=10.0, burst=3)
    bucket.try_take(0.0)
    assert sum(bucket.try_take(3600.0) for _ in range(10)) == 3


def test_retry_after_is_zero_when_a_token_is_there() -> None:
    bucket = TokenBucket(rate_per_second=0.5, burst=1)
    assert bucket.retry_after(0.0) == 0.0
    bucket.try_take(0.0)
    assert bucket.retry_after(0.5) == pytest.approx(1.5)  # one request every 2 s
    assert math.ceil(bucket.retry_after(0.5)) == 2


def test_taking_several_tokens_at_once() -> None:
    bucket = TokenBucket(rate_per_second=1.0, burst=4)
    assert bucket.try_take(0.0, tokens=3)
    assert not bucket.try_take(0.0, tokens=2)  # nothing is taken on a refusal
    assert bucket.try_take(0.0, tokens=1)
    assert bucket.retry_after(0.0, tokens=5) == math.inf


def test_a_clock_that_steps_back_adds_nothing() -> None:
    bucket = TokenBucket(rate_per_second=1.0, burst=1)
    assert bucket.try_take(10.0)
    assert not bucket.try_take(5.0)
    assert bucket.try_take(11.0)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (math.inf, 1), (1.0, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError):
        TokenBucket(rate, burst)
