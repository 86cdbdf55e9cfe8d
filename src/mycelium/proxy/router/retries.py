"""Retry policy: which failed attempts may be repeated, and how long to wait first.

Sans-IO: the loop that applies it is `forward`. A connect failure never reached the
upstream, so any request may be retried after it; anything else only for idempotent
methods whose body is still held whole.
"""

from __future__ import annotations

import random

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import ProxyError, UpstreamConnectFailed, UpstreamReset, UpstreamTimeout

# Between retries: 25 ms doubling, with jitter (Envoy's default base interval).
RETRY_BACKOFF_BASE_SECONDS = 0.025
RETRY_BACKOFF_MAX_SECONDS = 0.25
# Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
GATEWAY_ERRORS = frozenset({502, 503, 504})


def retry_allowed(
    policy: cfg.RetryPolicy | None,
    method: bytes,
    body_replayable: bool,
    *,
    status: int | None = None,
    error: ProxyError | None = None,
) -> bool:
    """Whether an attempt that ended like this may be repeated under `policy`."""
    if policy is None or policy.attempts == 0:
        return False
    conditions = policy.retry_on
    if isinstance(error, UpstreamConnectFailed):
        return "connect-failure" in conditions or "gateway-error" in conditions
    if method not in IDEMPOTENT or not body_replayable:
        return False
    if error is not None:
        if isinstance(error, UpstreamReset):
            return "reset" in conditions or "5xx" in conditions
        if isinstance(error, UpstreamTimeout):
            return "5xx" in conditions or "gateway-error" in conditions
        return False
    if status is None:
        return False
    if "5xx" in conditions and status >= 500:
        return True
    if "gateway-error" in conditions and status in GATEWAY_ERRORS:
        return True
    return "retriable-status-codes" in conditions and status in policy.retriable_status_codes


def retry_pause(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before attempt number `attempt` (1 for the first retry)."""
    base = RETRY_BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1)
    return min(RETRY_BACKOFF_MAX_SECONDS, base) * rng.uniform(0.5, 1.0)


def status_error(status: int) -> ProxyError:
    """The failure a retried status stands for, should the retries run out."""
    error = ProxyError(f"upstream answered {status}")
    error.reason = f"status_{status}"
    return error
