"""Circuit breaking: hard caps on what one proxy asks of one cluster at a time.

Envoy's model, not Hystrix's: there is no open/half-open state machine, just three
counters with limits. When a cap is reached the request is refused at once (the proxy
answers 503 `circuit_open`) instead of queueing behind an overloaded upstream, which
keeps a slow cluster from tying up the caller's memory and connections.

Each `try_acquire_*` that returns True must be paired with exactly one `release_*` of the
same kind; a release without its acquire raises `CircuitAccountingError` (a bug in the
caller, which would otherwise silently loosen the limit).
"""

from __future__ import annotations

from dataclasses import dataclass

from mycelium.errors import ConfigError, MeshError


class CircuitAccountingError(MeshError):
    """A circuit breaker slot was released that was never acquired."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStats:
    """Current use and refusals so far, for metrics and the admin page."""

    connections: int
    pending_requests: int
    requests: int
    refused_connections: int
    refused_pending_requests: int
    refused_requests: int


def _check_limit(name: str, limit: int | None) -> int | None:
    if limit is not None and limit < 0:
        raise ConfigError(
            f"connection pool {name} is {limit}: use 0 or more, or leave it unset for no limit"
        )
    return limit


class CircuitBreaker:
    """Limits on one cluster's connections, queued requests and requests in flight.

    max_connections       connections open to all of the cluster's endpoints together
    max_pending_requests  requests waiting for a connection to become free or be opened
    max_requests          requests in flight to the cluster (HTTP/2 streams included)

    None means no limit; 0 refuses everything of that kind. Current use is in
    `connections`, `pending_requests` and `requests`; refusals so far in
    `refused_connections`, `refused_pending_requests` and `refused_requests`.
    """

    __slots__ = (
        "connections",
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "pending_requests",
        "refused_connections",
        "refused_pending_requests",
        "refused_requests",
        "requests",
    )

    def __init__(
        self,
        max_connections: int | None = None,
        max_pending_requests: int | None = None,
        max_requests: int | None = None,
    ) -> None:
        self.max_connections = _check_limit("max_connections", max_connections)
        self.max_pending_requests = _check_limit("max_pending_requests", max_pending_requests)
        self.max_requests = _check_limit("max_requests_in_flight", max_requests)
        self.connections = 0
        self.pending_requests = 0
        self.requests = 0
        self.refused_connections = 0
        self.refused_pending_requests = 0
        self.refused_requests = 0

    def try_acquire_connection(self) -> bool:
        limit = self.max_connections
        if limit is not None and self.connections >= limit:
            self.refused_connections += 1
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        if self.connections <= 0:
            raise CircuitAccountingError("released a connection slot that was never acquired")
        self.connections -= 1

    def try_acquire_pending(self) -> bool:
        limit = self.max_pending_requests
        if limit is not None and self.pending_requests >= limit:
            self.refused_pending_requests += 1
            return False
        self.pending_requests += 1
        return True

    def release_pending(self) -> None:
        if self.pending_requests <= 0:
            raise CircuitAccountingError("released a pending-request slot never acquired")
        self.pending_requests -= 1

    def try_acquire_request(self) -> bool:
        limit = self.max_requests
        if limit is not None and self.requests >= limit:
            self.refused_requests += 1
            return False
        self.requests += 1
        return True

    def release_request(self) -> None:
        if self.requests <= 0:
            raise CircuitAccountingError("released a request slot that was never acquired")
        self.requests -= 1

    def stats(self) -> CircuitStats:
        return CircuitStats(
            connections=self.connections,
            pending_requests=self.pending_requests,
            requests=self.requests,
            refused_connections=self.refused_connections,
            refused_pending_requests=self.refused_pending_requests,
            refused_requests=self.refused_requests,
        )
