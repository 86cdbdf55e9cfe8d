"""A token bucket: the admission rule behind the proxies' local rate limiting and the
controller's per-client limits (so it sits below both).

Tokens drip in at `rate_per_second` up to `burst`; each admitted request takes one. So a
client may send `burst` requests at once after a quiet spell, and `rate_per_second` on
average over any longer stretch. Sans-IO: the caller passes the time (monotonic
seconds) and gets a yes or no, plus how long to wait for the next token.
"""

from __future__ import annotations

import math

from mycelium.errors import ConfigError


class TokenBucket:
    """Admits `rate_per_second` requests per second on average, `burst` at once.

    rate_per_second  tokens added per second (0.5: one request every two seconds)
    burst            the bucket's capacity, and how full it starts

    `tokens` holds the level as of the last call, fractions included.
    """

    __slots__ = ("_at", "burst", "rate_per_second", "tokens")

    def __init__(self, rate_per_second: float, burst: int) -> None:
        if not rate_per_second > 0 or math.isinf(rate_per_second):
            raise ConfigError(
                f"rate limit of {rate_per_second} requests per second: use a positive, finite "
                "rate (requests / per_seconds in the RateLimitPolicy)"
            )
        if burst < 1:
            raise ConfigError(
                f"rate limit burst is {burst}: use 1 or more, or no request could ever pass"
            )
        self.rate_per_second = float(rate_per_second)
        self.burst = burst
        self.tokens = float(burst)
        self._at: float | None = None

    def _refill(self, now: float) -> float:
        at = self._at
        if at is None or now <= at:
            # First use, or the clock stood still (or stepped back): nothing to add.
            if at is None:
                self._at = now
            return self.tokens
        self.tokens = min(float(self.burst), self.tokens + (now - at) * self.rate_per_second)
        self._at = now
        return self.tokens

    def try_take(self, now: float, tokens: int = 1) -> bool:
        """Take `tokens` if the bucket holds them; False (and nothing taken) otherwise."""
        if self._refill(now) >= tokens:
            self.tokens -= tokens
            return True
        return False

    def retry_after(self, now: float, tokens: int = 1) -> float:
        """Seconds until `tokens` will be there (0.0 if they are now; infinite if more
        than `burst` are asked for). Round up to whole seconds for `retry-after`."""
        if tokens > self.burst:
            return math.inf
        missing = tokens - self._refill(now)
        return missing / self.rate_per_second if missing > 0 else 0.0


def whole_seconds(wait: float) -> int:
    """A wait as `retry-after` wants it: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
