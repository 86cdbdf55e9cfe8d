"""Retry budget: in a failure storm retries add at most `ratio` of the traffic plus the
floor; at low traffic the floor still allows retries."""

import pytest

from mycelium.errors import ConfigError
from mycelium.proxy.upstream.retry_budget import RetryBudget


def storm(
    budget: RetryBudget, *, rate: float, seconds: float, attempts: int
) -> list[tuple[float, bool]]:
    """Every request fails and asks for up to `attempts - 1` retries; returns the time
    of each original request and whether a retry was granted at that time."""
    events: list[tuple[float, bool]] = []
    step = 1.0 / rate
    n = round(seconds * rate)
    for i in range(n):
        now = i * step
        budget.record_request(now)
        events.append((now, False))
        for _ in range(attempts - 1):
            if not budget.try_retry(now):
                break
            events.append((now, True))
    return events


def test_in_a_failure_storm_retries_stay_within_ratio_plus_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=10, ttl=10.0)
    events = storm(budget, rate=1000.0, seconds=60.0, attempts=3)
    # Every ttl-long window, sliding by one bucket (a second): the budget's own steps.
    for start in range(51):
        window = [retry for at, retry in events if start <= at < start + 10]
        assert window.count(True) <= 0.2 * window.count(False) + 100
    total_requests = sum(1 for _, retry in events if not retry)
    total_retries = sum(1 for _, retry in events if retry)
    assert total_retries / total_requests == pytest.approx(0.2 + 100 / 10_000, abs=0.03)
    assert budget.refused > 0


def test_at_low_traffic_the_floor_allows_every_retry() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=10, ttl=10.0)
    events = storm(budget, rate=1.0, seconds=60.0, attempts=4)
    assert sum(1 for _, retry in events if retry) == 60 * 3
    assert budget.refused == 0


def test_a_spent_budget_refills_as_the_window_slides() -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1, ttl=10.0)
    assert all(budget.try_retry(0.0) for _ in range(10))
    assert not budget.try_retry(5.0)
    assert budget.balance(5.0) == 0
    assert budget.try_retry(10.0)  # the first second's withdrawals have expired


def test_requests_earn_retries_at_the_ratio() -> None:
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0, ttl=10.0)
    assert not budget.try_retry(0.0)
    for _ in range(4):
        budget.record_request(0.0)
    assert [budget.try_retry(0.1) for _ in range(3)] == [True, True, False]
    assert (budget.retries, budget.refused) == (2, 2)


def test_a_long_silence_forgets_everything() -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1, ttl=10.0)
    for _ in range(10):
        budget.try_retry(0.0)
    assert budget.balance(1000.0) == 10


@pytest.mark.parametrize(
    ("args", "field"),
    [((-0.1, 10, 10.0), "ratio"), ((0.2, -1, 10.0), "min_retries"), ((0.2, 10, 0.0), "ttl")],
)
def test_nonsense_settings_are_refused_with_a_hint(
    args: tuple[float, int, float], field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        RetryBudget(*args)
