"""Telemetry shared by every proxy: metrics, access logs, tracing and tap.

The proxy tells telemetry about each finished request (`RequestObserver`, given a
frozen `FinishedRequest` of either protocol, never the live exchange) and each finished
TCP connection (`ConnectionObserver`: `OpenedConnection` when the relay starts,
`FinishedConnection` when it ends). Observers are
called on the hot path, once per request: they must only count and append, never
block or allocate much; whatever is slow (rendering, writing, exporting) happens
later, on their own schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from mycelium.telemetry.tracing import Span

# OTLP's SpanKind values.
SPAN_KIND_SERVER: Final = 2
SPAN_KIND_CLIENT: Final = 3


@dataclass(frozen=True, slots=True)
class TrafficSide:
    """Which side of a call a listener's telemetry describes; each listener role of the
    proxy carries one, so telemetry never asks which kind of proxy it runs in."""

    direction: str  # "outbound", "inbound", "local", "gateway": access log, tap, spans
    # Istio's `reporter`: the caller's side ("source") or the served side ("destination")
    reporter: Literal["source", "destination"]
    # Envoy's and Istio's choice: a sidecar's outbound hop is the caller's side of the
    # call (CLIENT), its inbound hop the served side (SERVER); a gateway makes one span
    # for both its sides, SERVER, since it is where the request enters the mesh.
    span_kind: Literal[2, 3]
    # A gateway's service key is its listener's route; the service it called is the one
    # that names the cluster ("<svc>.<ns>[/<subset>]").
    callee_from_cluster: bool = False


OUTBOUND: Final = TrafficSide("outbound", "source", SPAN_KIND_CLIENT)
LOCAL: Final = TrafficSide("local", "source", SPAN_KIND_CLIENT)
INBOUND: Final = TrafficSide("inbound", "destination", SPAN_KIND_SERVER)
GATEWAY: Final = TrafficSide("gateway", "source", SPAN_KIND_SERVER, callee_from_cluster=True)


class FinishedRequest(msgspec.Struct, frozen=True, gc=False):
    """A request of either protocol once it ended, as every request observer sees it.

    Built once per request on the hot path: a frozen msgspec struct costs a tenth of
    what a frozen dataclass does to make.
    """

    side: TrafficSide
    protocol: str  # "HTTP/1.1" or "HTTP/2"
    method: bytes
    target: bytes
    host: str
    service: str
    rule_name: str
    status: int
    reason: str  # why the proxy answered or cut it itself; "" when it did not
    cluster_name: str
    upstream_host: str
    bytes_received: int  # the request body's, from the client
    bytes_sent: int  # to the client
    started: float  # time.monotonic() when the request head was complete
    response_head_at: float  # time.monotonic() when the upstream's head came; 0: never
    # time.monotonic() when it ended: every observer measures the same duration, and
    # none reads the clock again
    ended: float
    grpc: bool
    grpc_status: str  # from the response's trailers (or our own reply); "" if not gRPC
    peer_host: str  # the client's address
    peer_principal: str | None  # its SPIFFE ID when it came over mTLS
    peer_metadata: bytes | None  # the calling proxy's introduction (mTLS only)
    headers: list[tuple[bytes, bytes]]  # the request's fields as last forwarded
    span: Span | Literal[False] | None = None  # tracing: None undecided, False unsampled
    # gRPC messages (request, response): the client's sent on, the upstream's returned
    grpc_messages: tuple[int, int] = (0, 0)


class RequestObserver(Protocol):
    def request_finished(self, request: FinishedRequest) -> None: ...


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
    ended_by: str  # how it ended (net.relay.RelayEnd)
    peer_metadata: bytes | None = None  # the calling proxy's introduction (mTLS only)


@dataclass(frozen=True, slots=True)
class OpenedConnection:
    """A TCP connection the proxy starts to relay (its end comes as FinishedConnection)."""

    direction: str
    service: str
    cluster: str
    upstream_host: str  # host:port the relay connects to
    peer_principal: str | None
    mtls_upstream: bool
    peer_metadata: bytes | None = None  # the calling proxy's introduction (mTLS only)


class ConnectionObserver(Protocol):
    def connection_opened(self, connection: OpenedConnection) -> None: ...

    def connection_finished(self, connection: FinishedConnection) -> None: ...
