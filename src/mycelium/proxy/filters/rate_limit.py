"""Local rate limiting on the serving side (RateLimitPolicy): a token bucket per policy
(or per route rule), counting the requests it covers. An empty bucket answers 429 with
`retry-after` and reason `rate_limited`; the request never reaches the app.

Local means per proxy, as Envoy's local rate limit is: three replicas with a limit of
100/s accept up to 300/s between them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import RateLimited
from mycelium.proxy.routing import Matcher, compile_matches
from mycelium.token_bucket import TokenBucket, whole_seconds

if TYPE_CHECKING:
    from mycelium.proxy.filters.base import FilteredRequest


class RateLimitFilter:
    def __init__(self, limit: cfg.RateLimit) -> None:
        self.name = limit.name
        self._ports = frozenset(limit.ports)
        self._matcher: Matcher | None = compile_matches(limit.matches)
        self.bucket = TokenBucket(limit.requests / limit.per_seconds, limit.burst)
        self.refused = 0

    def applies(self, port: int) -> bool:
        return not self._ports or port in self._ports

    def on_request(self, request: FilteredRequest) -> float | None:
        facts = request.facts
        if self._matcher is not None and facts is not None and not self._matcher(facts):
            return None
        now = time.monotonic()
        if self.bucket.try_take(now):
            return None
        self.refused += 1
        wait = whole_seconds(self.bucket.retry_after(now))
        raise RateLimited(f"rate limit {self.name} exceeded; retry in {wait}s", retry_after=wait)
