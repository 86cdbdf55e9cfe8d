"""Telemetry shared by every proxy: metrics, access logs, tracing and tap.

The proxy tells telemetry about each finished request (`RequestObserver`, given the
exchange of either protocol: see `telemetry/access_log.LoggedExchange`) and each finished
TCP connection (`ConnectionObserver`: `OpenedConnection` when the relay starts,
`FinishedConnection` when it ends). Observers are
called on the hot path, once per request: they must only count and append, never
block or allocate much; whatever is slow (rendering, writing, exporting) happens
later, on their own schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mycelium.telemetry.access_log import LoggedExchange


class RequestObserver(Protocol):
    def request_finished(self, exchange: LoggedExchange) -> None: ...


@dataclass(frozen=True, slots=True)
class FinishedConnection:
    """A TCP connection the proxy relayed (opaque ports, TCP services, passthrough)."""

    direction: str  # "inbound" or "outbound" (as listeners are named)
    service: str  # the service key, "" for passthrough
    cluster: str
    upstream_host: str  # host:port, "" if no upstream connection was made
    peer: str  # the client's address
    peer_principal: str | None  # its SPIFFE ID when it came over mTLS
    mtls_upstream: bool
    bytes_received: int  # from the client
    bytes_sent: int  # to the client
    duration: float  # seconds
    ended_by: str  # how it ended (tcp_relay.RelayEnd)


@dataclass(frozen=True, slots=True)
class OpenedConnection:
    """A TCP connection the proxy starts to relay (its end comes as FinishedConnection)."""

    direction: str
    service: str
    cluster: str
    upstream_host: str  # host:port the relay connects to
    peer_principal: str | None
    mtls_upstream: bool


class ConnectionObserver(Protocol):
    def connection_opened(self, connection: OpenedConnection) -> None: ...

    def connection_finished(self, connection: FinishedConnection) -> None: ...
