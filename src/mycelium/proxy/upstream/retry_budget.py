"""Retry budget: retries may add at most a fixed share of load on top of the requests.

Linkerd's (after Finagle's) answer to retry storms: instead of a per-request attempt
limit, which multiplies load by the attempt count exactly when an upstream is failing,
retries are paid for out of a budget that original requests fill. Over any `ttl`-second
window:

    retries allowed = min_retries_per_second * ttl  +  ratio * requests

The floor lets a quiet service retry at all (ten requests a minute with a 20 % ratio
would otherwise never earn one); the ratio caps the extra load a failure storm can add,
at 20 % by default. Requests and retries are counted in `BUCKETS` time buckets, so the
window slides in steps of `ttl / BUCKETS` at a constant memory and O(1) per call.
"""

from __future__ import annotations

from mycelium.errors import ConfigError

# Buckets per window: the window moves in tenths of ttl (1 s at the 10 s default),
# coarse enough to be cheap, fine enough that a budget expires smoothly.
BUCKETS = 10


class RetryBudget:
    """A sliding-window budget of retries for one cluster.

    ratio                   retries each original request earns (0.2: one per five)
    min_retries_per_second  retries allowed regardless of traffic, per second of window
    ttl                     seconds a deposit (a request) or a withdrawal (a retry) counts

    Call `record_request(now)` for every original request (never for a retry) and
    `try_retry(now)` before every retry; a False means the budget is spent: fail the
    request with what it got. `retries`, `refused` count retries granted and refused.
    """

    __slots__ = (
        "_bucket",
        "_bucket_seconds",
        "_floor",
        "_request_counts",
        "_request_sum",
        "_retry_counts",
        "_retry_sum",
        "_slot",
        "_span_end",
        "_span_start",
        "min_retries_per_second",
        "ratio",
        "refused",
        "retries",
        "ttl",
    )

    def __init__(
        self, ratio: float = 0.2, min_retries_per_second: int = 10, ttl: float = 10.0
    ) -> None:
        if ratio < 0:
            raise ConfigError(f"retry budget ratio is {ratio}: use 0 or more (0.2 is 20 %)")
        if min_retries_per_second < 0:
            raise ConfigError(
                f"retry budget min_retries_per_second is {min_retries_per_second}: use 0 or more"
            )
        if ttl <= 0:
            raise ConfigError(f"retry budget ttl is {ttl}s: use a positive number of seconds")
        self.ratio = ratio
        self.min_retries_per_second = min_retries_per_second
        self.ttl = ttl
        self._floor = min_retries_per_second * ttl
        self._bucket_seconds = ttl / BUCKETS
        self._request_counts = [0] * BUCKETS
        self._retry_counts = [0] * BUCKETS
        self._request_sum = 0
        self._retry_sum = 0
        self._bucket: int | None = None  # absolute number of the current bucket
        # The current bucket's time span and slot: most calls fall inside it, and
        # checking that is cheaper than working the bucket out again.
        self._span_start = 0.0
        self._span_end = 0.0
        self._slot = 0
        self.retries = 0
        self.refused = 0

    def record_request(self, now: float) -> None:
        """An original request (not a retry) was sent: it earns `ratio` retries."""
        # `_advance`'s first test, inlined: once per request, and nearly always true
        slot = self._slot if self._span_start <= now < self._span_end else self._advance(now)
        self._request_counts[slot] += 1
        self._request_sum += 1

    def try_retry(self, now: float) -> bool:
        """Take one retry from the budget; False when there is none left."""
        slot = self._advance(now)
        if self._retry_sum + 1 > self._floor + self.ratio * self._request_sum:
            self.refused += 1
            return False
        self._retry_counts[slot] += 1
        self._retry_sum += 1
        self.retries += 1
        return True

    def balance(self, now: float) -> float:
        """Retries still allowed in the current window (for metrics)."""
        self._advance(now)
        return self._floor + self.ratio * self._request_sum - self._retry_sum

    def _advance(self, now: float) -> int:
        if self._span_start <= now < self._span_end:
            return self._slot
        bucket = int(now // self._bucket_seconds)
        current = self._bucket
        if current is None or bucket - current >= BUCKETS:
            self._request_counts = [0] * BUCKETS
            self._retry_counts = [0] * BUCKETS
            self._request_sum = self._retry_sum = 0
        elif bucket > current:
            requests, retries = self._request_counts, self._retry_counts
            for b in range(current + 1, bucket + 1):
                slot = b % BUCKETS
                self._request_sum -= requests[slot]
                self._retry_sum -= retries[slot]
                requests[slot] = retries[slot] = 0
        elif bucket < current:
            return current % BUCKETS  # the clock stepped back: count it as now
        self._bucket = bucket
        self._span_start = bucket * self._bucket_seconds
        self._span_end = self._span_start + self._bucket_seconds
        self._slot = bucket % BUCKETS
        return self._slot
