"""A finished request as telemetry sees it (`telemetry/access_log.LoggedExchange`), without
a proxy: for the unit tests of the access log, the tap and the metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mycelium.proxy.http.exchange import Listener


@dataclass
class FakeClient:
    peer_host: str = "198.18.0.9"
    peer_principal: str | None = None
    peer_metadata: bytes | None = None  # the calling proxy's introduction (mTLS only)


@dataclass
class FinishedRequest:
    protocol: str = "HTTP/2"
    listener: Listener = field(default_factory=lambda: Listener(kind="outbound"))
    method: bytes = b"POST"
    target: bytes = b"/ratings.Ratings/Get"
    host: str = "ratings:9090"
    service: str = "ratings.default"
    rule_name: str = "ratings/0"
    status: int = 503
    reason: str = "circuit_open"
    cluster_name: str = "ratings.default|9090"
    upstream_host: str = ""
    bytes_sent: int = 17
    bytes_received: int = 5
    started: float = field(default_factory=time.monotonic)
    response_head_at: float = 0.0
    downstream: FakeClient = field(default_factory=FakeClient)
    grpc: bool = False
    grpc_status: str = ""
