"""Per-client limits: each client has its own bucket; the table stays bounded."""

from __future__ import annotations

from mycelium.control.client_limits import ClientLimits, retry_after_header


def test_each_client_has_its_own_budget() -> None:
    limits = ClientLimits(rate_per_second=1.0, burst=2)
    assert limits.admit("198.18.0.1", 0.0) is None
    assert limits.admit("198.18.0.1", 0.0) is None
    wait = limits.admit("198.18.0.1", 0.0)
    assert wait == 1.0
    assert retry_after_header(wait) == "1"
    assert limits.admit("198.18.0.2", 0.0) is None  # someone else is not affected
    assert limits.admit("198.18.0.1", 1.0) is None  # a token came back
    assert limits.refused == 1


def test_the_table_forgets_the_least_recent_client() -> None:
    limits = ClientLimits(rate_per_second=1.0, burst=1, max_clients=2)
    limits.admit("a", 0.0)
    limits.admit("b", 0.0)
    limits.admit("c", 0.0)  # "a" is forgotten
    assert limits.admit("a", 0.0) is None  # a full bucket again
    assert limits.admit("c", 0.0) is not None
