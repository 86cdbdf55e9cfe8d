"""A finished request as telemetry receives it (`mycelium.telemetry.FinishedRequest`),
without a proxy: for the unit tests of the access log, the tap and the metrics; and one
as a tap reports it (`tap_event`), for the tests of the controller's tap relay."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mycelium.discovery import protocol as p
from mycelium.telemetry import GATEWAY, INBOUND, LOCAL, OUTBOUND, FinishedRequest

SIDES = {"outbound": OUTBOUND, "inbound": INBOUND, "local": LOCAL, "gateway": GATEWAY}


@dataclass
class FakeClient:
    """Who sent the request: its address, and over mTLS its identity and introduction."""

    peer_host: str = "198.18.0.9"
    peer_principal: str | None = None
    peer_metadata: bytes | None = None  # the calling proxy's introduction (mTLS only)


def finished_request(
    side: str = "outbound", downstream: FakeClient | None = None, **fields: Any
) -> FinishedRequest:
    """A gRPC call the proxy refused with `circuit_open`, unless `fields` say otherwise;
    `side` names the listener's side ("outbound", "inbound", "local", "gateway")."""
    client = downstream or FakeClient()
    now = time.monotonic()
    values: dict[str, Any] = {
        "protocol": "HTTP/2",
        "method": b"POST",
        "target": b"/ratings.Ratings/Get",
        "host": "ratings:9090",
        "service": "ratings.default",
        "rule_name": "ratings/0",
        "status": 503,
        "reason": "circuit_open",
        "cluster_name": "ratings.default|9090",
        "upstream_host": "",
        "bytes_received": 5,
        "bytes_sent": 17,
        "started": now - 0.004,  # it took 4 ms
        "response_head_at": 0.0,
        "ended": now,
        "grpc": False,
        "grpc_status": "",
        "peer_host": client.peer_host,
        "peer_principal": client.peer_principal,
        "peer_metadata": client.peer_metadata,
        "headers": [],
        **fields,
    }
    return FinishedRequest(side=SIDES[side], **values)


def tap_event() -> p.TapEvent:
    """An inbound GET / that reviews answered 200, as a tap's batch carries it."""
    return p.TapEvent(
        ts=1.0, direction="inbound", protocol="HTTP/1.1", method="GET", path="/",
        authority="reviews", service="reviews.default", status=200, latency_ms=1.0,
        source="198.18.0.9", source_principal=None, destination="127.0.0.1:9080",
        reason="", response_flags="-",
    )  # fmt: skip
