"""What may be retried: the policy half of retries, separate from the mechanism."""

from __future__ import annotations

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import UpstreamConnectFailed, UpstreamReset, UpstreamTimeout
from mycelium.proxy.router.retries import retry_allowed

FIVE_XX = cfg.RetryPolicy(attempts=2, retry_on=["5xx"])
GATEWAY = cfg.RetryPolicy(attempts=2, retry_on=["gateway-error", "connect-failure"])


def test_without_a_policy_nothing_is_retried() -> None:
    assert not retry_allowed(None, b"GET", True, status=503)


def test_a_5xx_policy_retries_server_errors_of_safe_requests_only() -> None:
    assert retry_allowed(FIVE_XX, b"GET", True, status=500)
    assert not retry_allowed(FIVE_XX, b"GET", True, status=404)
    assert not retry_allowed(FIVE_XX, b"POST", True, status=503)  # not idempotent
    assert not retry_allowed(FIVE_XX, b"PUT", False, status=503)  # body no longer held


def test_gateway_errors_are_502_503_504() -> None:
    assert retry_allowed(GATEWAY, b"GET", True, status=503)
    assert not retry_allowed(GATEWAY, b"GET", True, status=500)


def test_a_connect_failure_may_be_retried_for_any_method() -> None:
    error = UpstreamConnectFailed("refused")
    assert retry_allowed(GATEWAY, b"POST", False, error=error)
    assert not retry_allowed(FIVE_XX, b"POST", True, error=error)


def test_resets_and_timeouts_follow_their_conditions() -> None:
    reset = cfg.RetryPolicy(attempts=1, retry_on=["reset"])
    assert retry_allowed(reset, b"GET", True, error=UpstreamReset("rst"))
    assert not retry_allowed(reset, b"GET", True, error=UpstreamTimeout("slow"))
    assert retry_allowed(FIVE_XX, b"GET", True, error=UpstreamTimeout("slow"))


def test_retriable_status_codes_are_listed_explicitly() -> None:
    policy = cfg.RetryPolicy(
        attempts=1, retry_on=["retriable-status-codes"], retriable_status_codes=[409]
    )
    assert retry_allowed(policy, b"DELETE", True, status=409)
    assert not retry_allowed(policy, b"DELETE", True, status=503)
