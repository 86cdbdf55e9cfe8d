"""A finished request as telemetry sees it (`telemetry/access_log.LoggedExchange`), without
a proxy: for the unit tests of the access log, the tap and the metrics; and one as a
tap reports it (`tap_event`), for the tests of the controller's tap relay."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mycelium.discovery import protocol as p
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


def tap_event() -> p.TapEvent:
    """An inbound GET / that reviews answered 200, as a tap's batch carries it."""
    return p.TapEvent(
        ts=1.0, direction="inbound", protocol="HTTP/1.1", method="GET", path="/",
        authority="reviews", service="reviews.default", status=200, latency_ms=1.0,
        source="198.18.0.9", source_principal=None, destination="127.0.0.1:9080",
        reason="", response_flags="-",
    )  # fmt: skip
