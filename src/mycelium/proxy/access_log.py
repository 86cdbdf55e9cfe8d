"""The access log: one JSON line per finished request, HTTP/1.1 or HTTP/2.

Each record says where the request went (service, rule, cluster, endpoint), who sent
it (address, and SPIFFE ID when it came over mTLS) and, when
the proxy answered or cut it itself, why: `reason` is the same word as the response's
`x-mycelium-reason` (`no_route`, `upstream_timeout`, `circuit_open`...), so a 503 in a
client's log can be matched to its cause here.

Lines are buffered and written out by the core's once-a-second sweep (and at exit):
a write and flush per request would cost a system call per request on the hot path.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from mycelium.proxy.http.exchange import Listener

# Written out sooner than the sweep once this many lines wait (a burst).
FLUSH_LINES = 512


class _Client(Protocol):
    @property
    def peer_host(self) -> str: ...

    @property
    def peer_principal(self) -> str | None: ...

    @property
    def peer_metadata(self) -> bytes | None: ...


class LoggedExchange(Protocol):
    """What an exchange of either protocol tells the log."""

    protocol: str
    listener: Listener
    method: bytes
    target: bytes
    host: str
    service: str
    rule_name: str
    status: int
    reason: str
    cluster_name: str
    upstream_host: str
    bytes_sent: int
    started: float
    grpc: bool
    grpc_status: str  # from the response's trailers (or our own reply); "" if not gRPC

    @property
    def bytes_received(self) -> int: ...  # the request body's, from the client

    @property
    def downstream(self) -> _Client: ...


class AccessLog:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []

    def record(self, exchange: LoggedExchange) -> None:
        principal = exchange.downstream.peer_principal
        entry = {
            "ts": time.time(),
            "protocol": exchange.protocol,
            "direction": exchange.listener.kind,
            "method": exchange.method.decode("latin-1"),
            "path": exchange.target.decode("latin-1"),
            "host": exchange.host,
            "service": exchange.service,
            "rule": exchange.rule_name,
            "status": exchange.status,
            "reason": exchange.reason or None,
            "upstream_cluster": exchange.cluster_name or None,
            "upstream_host": exchange.upstream_host or None,
            "bytes_sent": exchange.bytes_sent,
            "duration_ms": round((time.monotonic() - exchange.started) * 1000, 3),
            "client": exchange.downstream.peer_host,
            # who the client proved to be (mTLS), in Istio's telemetry words
            "source_principal": principal,
            "connection_security_policy": "mutual_tls" if principal else "none",
        }
        self._lines.append(json.dumps(entry))
        if len(self._lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
