"""Circuit breaking: caps on connections, queued and in-flight requests, refusing at
once (never raising) when a cap is reached."""

import pytest

from mycelium.errors import ConfigError
from mycelium.proxy.upstream.circuit import CircuitAccountingError, CircuitBreaker


def test_requests_beyond_the_cap_are_refused_and_counted() -> None:
    breaker = CircuitBreaker(max_requests=2)
    assert [breaker.try_acquire_request() for _ in range(4)] == [True, True, False, False]
    assert breaker.refused_requests == 2
    breaker.release_request()
    assert breaker.try_acquire_request()
    assert breaker.stats().requests == 2


def test_each_kind_has_its_own_cap() -> None:
    breaker = CircuitBreaker(max_connections=1, max_pending_requests=1, max_requests=None)
    assert breaker.try_acquire_connection()
    assert not breaker.try_acquire_connection()
    assert breaker.try_acquire_pending()
    assert not breaker.try_acquire_pending()
    assert all(breaker.try_acquire_request() for _ in range(1000))  # None: no limit
    stats = breaker.stats()
    assert (stats.refused_connections, stats.refused_pending_requests) == (1, 1)
    assert (stats.connections, stats.pending_requests, stats.requests) == (1, 1, 1000)
    breaker.release_connection()
    breaker.release_pending()
    assert breaker.try_acquire_connection()
    assert breaker.try_acquire_pending()


def test_a_cap_of_zero_refuses_everything() -> None:
    breaker = CircuitBreaker(max_connections=0)
    assert not breaker.try_acquire_connection()


@pytest.mark.parametrize("kind", ["connection", "pending", "request"])
def test_a_release_without_an_acquire_is_a_loud_bug(kind: str) -> None:
    breaker = CircuitBreaker()
    with pytest.raises(CircuitAccountingError):
        getattr(breaker, f"release_{kind}")()


def test_a_negative_limit_is_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="max_pending_requests"):
        CircuitBreaker(max_pending_requests=-1)
