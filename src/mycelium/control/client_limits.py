"""Per-client rate limits on the controller's endpoints.

Each client (its address) gets a token bucket; a client over its rate is answered
429 with `retry-after` and costs the controller nothing more, so one runaway script or
a token-guessing peer cannot starve the others. The table of clients is bounded: when
full, the least recently seen client is forgotten (it starts again with a full bucket,
which errs on the side of serving).
"""

from __future__ import annotations

from collections import OrderedDict

from mycelium.token_bucket import TokenBucket, whole_seconds

MAX_CLIENTS = 10_000


class ClientLimits:
    def __init__(self, rate_per_second: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.refused = 0

    def admit(self, client: str, now: float) -> float | None:
        """None when `client` may go on; otherwise the seconds to wait (for retry-after)."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_second, self.burst)
            self._buckets[client] = bucket
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        if bucket.try_take(now):
            return None
        self.refused += 1
        return bucket.retry_after(now)

    def would_refuse(self, client: str, now: float) -> bool:
        """Whether `admit` would refuse `client` now, taking nothing: for limits that
        count only failures, checked before the attempt and charged after it fails."""
        bucket = self._buckets.get(client)
        return bucket is not None and bucket.retry_after(now) > 0


def retry_after_header(wait: float) -> str:
    return str(whole_seconds(wait))
