"""Envoy response flags from the proxy's reason words: what Istio dashboards key on."""

from __future__ import annotations

import pytest

from mycelium.proxy import errors
from mycelium.telemetry.response_flags import NO_FLAG, response_flags


@pytest.mark.parametrize(
    ("reason", "status", "flag"),
    [
        ("no_healthy_upstream", 503, "UH"),
        ("upstream_connect_failed", 503, "UF"),
        ("upstream_timeout", 504, "UT"),
        ("no_route", 404, "NR"),
        ("unknown_service", 503, "NR"),
        ("retry_budget_exhausted", 503, "URX"),
        ("rate_limited", 429, "RL"),
        ("circuit_open", 503, "UO"),
        ("upstream_reset", 502, "UR"),
        ("fault_injected", 500, "FI"),
        ("client_reset", 0, "DC"),
        ("client_reset", 200, "DC"),  # the client left mid-body
    ],
)
def test_the_proxys_own_answers_get_envoys_flag(reason: str, status: int, flag: str) -> None:
    assert response_flags(reason, status) == flag


@pytest.mark.parametrize("status", [200, 404, 503])
def test_a_response_the_upstream_sent_has_no_flag(status: int) -> None:
    assert response_flags("", status) == NO_FLAG


def test_a_request_that_never_got_a_response_is_a_downstream_disconnect() -> None:
    assert response_flags("", 0) == "DC"


@pytest.mark.parametrize("reason", ["denied", "draining", "internal_error", "status_503", "new"])
def test_words_envoy_has_no_flag_for_are_a_dash(reason: str) -> None:
    assert response_flags(reason, 503) == NO_FLAG


@pytest.mark.parametrize(
    ("ended_by", "flag"),
    [
        ("completed", NO_FLAG),
        ("idle_timeout", "SI"),  # Envoy's stream idle timeout
        ("connect_failed", "UF"),
        ("connect_timeout", "UF"),
        ("downstream_lost", "DC"),
        ("upstream_lost", "UC"),
    ],
)
def test_tcp_connections_are_flagged_by_how_they_ended(ended_by: str, flag: str) -> None:
    assert response_flags(ended_by, 0) == flag


def test_every_reason_of_the_proxys_errors_is_known_or_deliberately_unflagged() -> None:
    # A new error class should decide its flag, not fall through to "-" by accident.
    unflagged = {"proxy_error", "egress_denied", "denied", "draining", "request_timeout"}
    reasons = {
        cls.reason
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ProxyError)
    }
    for reason in reasons - unflagged:
        assert response_flags(reason, 503) != NO_FLAG, reason
