"""The access log: one JSON line per finished request (HTTP/1.1 or HTTP/2) and per
relayed TCP connection.

Each request record says where the request went (service, rule, cluster, endpoint), who
sent it (address, and SPIFFE ID when it came over mTLS), how long it took (in all, and
until the upstream's response head arrived), the bytes both ways and, when the proxy
answered or cut it itself, why: `reason` is the same word as the response's
`x-mycelium-reason` (`no_route`, `upstream_timeout`, `circuit_open`...), so a 503 in a
client's log can be matched to its cause here, and `response_flags` is Envoy's code for
it (UH, UF, NR...: `telemetry/response_flags.py`), as Istio's logs say it. A TCP
connection's record says the same of the connection, and `ended_by` how it ended.

Sampling: with a ratio below 1 only that share of records is written, chosen at random;
errors are always written (a request the proxy answered or cut itself, any 5xx, a
request that got no response; a TCP connection that ended with a response flag), since
those are the lines an operator comes looking for.

Lines are buffered and written out by the core's once-a-second sweep (and at exit):
a write and flush per request would cost a system call per request on the hot path.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, TextIO

import msgspec

from mycelium.telemetry.response_flags import NO_FLAG, response_flags

if TYPE_CHECKING:
    from mycelium.telemetry import FinishedConnection, FinishedRequest, OpenedConnection

# Written out sooner than the sweep once this many lines wait (a burst).
FLUSH_LINES = 512
_encode_lines = msgspec.json.Encoder().encode_lines


class RequestLine(msgspec.Struct):
    """A request's line; fields in the order they are written. Built positionally on the
    hot path (a struct costs less to build and to encode than a dict)."""

    ts: float
    protocol: str
    direction: str
    method: str
    path: str
    host: str
    service: str
    rule: str
    status: int
    response_flags: str
    reason: str | None  # x-mycelium-reason
    upstream_cluster: str | None
    upstream_host: str | None
    bytes_received: int
    bytes_sent: int
    # until the upstream's response head arrived (Envoy's RESPONSE_DURATION)
    response_duration_ms: float | None
    duration_ms: float
    client: str
    # who the client proved to be (mTLS), in Istio's telemetry words
    source_principal: str | None
    connection_security_policy: str


class ConnectionLine(msgspec.Struct):
    """A relayed TCP connection's line."""

    ts: float
    protocol: str  # "TCP"
    direction: str
    service: str | None  # None: passthrough
    ended_by: str
    response_flags: str
    upstream_cluster: str | None
    upstream_host: str | None
    upstream_mtls: bool
    bytes_received: int
    bytes_sent: int
    duration_ms: float
    client: str
    source_principal: str | None
    connection_security_policy: str


def is_error(request: FinishedRequest) -> bool:
    """Whether a request is one sampling must never drop: answered or cut by the proxy
    (it has a reason), a 5xx from anywhere, or no response at all."""
    status = request.status
    return bool(request.reason) or status >= 500 or status == 0


class AccessLog:
    """A request observer and a connection observer writing JSON lines to `stream`."""

    def __init__(
        self, stream: TextIO, *, sampling: float = 1.0, rng: random.Random | None = None
    ) -> None:
        if not 0.0 <= sampling <= 1.0:
            raise ValueError(f"access log sampling must be a ratio from 0 to 1, not {sampling}")
        self._stream = stream
        self._lines: list[RequestLine | ConnectionLine] = []
        self.sampling = sampling
        self._random = (rng or random.Random()).random
        self.dropped = 0  # records left out by sampling

    def _sampled_out(self) -> bool:
        """Whether a record is left out (only asked when sampling is below 1)."""
        if self._random() < self.sampling:
            return False
        self.dropped += 1
        return True

    def request_finished(self, request: FinishedRequest) -> None:
        if self.sampling < 1.0 and not is_error(request) and self._sampled_out():
            return
        started = request.started
        head_at = request.response_head_at
        principal = request.peer_principal
        self._append(
            RequestLine(
                time.time(),
                request.protocol,
                request.side.direction,
                request.method.decode("latin-1"),
                request.target.decode("latin-1"),
                request.host,
                request.service,
                request.rule_name,
                request.status,
                response_flags(request.reason, request.status),
                request.reason or None,
                request.cluster_name or None,
                request.upstream_host or None,
                request.bytes_received,
                request.bytes_sent,
                round((head_at - started) * 1000, 3) if head_at else None,
                round((request.ended - started) * 1000, 3),
                request.peer_host,
                principal,
                "mutual_tls" if principal else "none",
            )
        )

    def connection_opened(self, connection: OpenedConnection) -> None:
        """A TCP connection gets its line when it ends, with what it moved."""

    def connection_finished(self, connection: FinishedConnection) -> None:
        flag = response_flags(connection.ended_by, 0)
        if self.sampling < 1.0 and flag == NO_FLAG and self._sampled_out():
            return
        principal = connection.peer_principal
        self._append(
            ConnectionLine(
                time.time(),
                "TCP",
                connection.direction,
                connection.service or None,  # None: passthrough
                connection.ended_by,
                flag,
                connection.cluster or None,
                connection.upstream_host or None,
                connection.mtls_upstream,
                connection.bytes_received,
                connection.bytes_sent,
                round(connection.duration * 1000, 3),
                connection.peer,
                principal,
                "mutual_tls" if principal else "none",
            )
        )

    def _append(self, entry: RequestLine | ConnectionLine) -> None:
        self._lines.append(entry)
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            # One call for the batch, in msgspec's encoder (the discovery protocol's
            # too): a fraction of what json.dumps costs per line, which matters when
            # every request is logged.
            self._stream.write(_encode_lines(lines).decode())
            self._stream.flush()
