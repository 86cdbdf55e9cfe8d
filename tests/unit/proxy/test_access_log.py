"""The access log's records and its buffering: lines wait for the sweep's flush, or for
a burst to fill the buffer."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field

from mycelium.proxy.access_log import FLUSH_LINES, AccessLog
from mycelium.proxy.http.exchange import Listener


@dataclass
class _Client:
    peer_host: str = "198.18.0.9"
    peer_principal: str | None = None


@dataclass
class _Finished:
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
    started: float = field(default_factory=time.monotonic)
    downstream: _Client = field(default_factory=_Client)


def test_a_record_waits_for_the_flush_then_reads_as_json() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    log.record(_Finished())
    assert out.getvalue() == ""

    log.flush()

    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["protocol"] == "HTTP/2"
    assert record["direction"] == "outbound"
    assert record["path"] == "/ratings.Ratings/Get"
    assert record["reason"] == "circuit_open"
    assert record["upstream_host"] is None  # never reached an endpoint
    assert record["client"] == "198.18.0.9"
    assert record["duration_ms"] >= 0
    assert record["source_principal"] is None
    assert record["connection_security_policy"] == "none"


def test_a_request_over_mtls_is_logged_with_the_peers_spiffe_id() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    peer = "spiffe://cluster.local/ns/default/sa/productpage"
    log.record(_Finished(downstream=_Client(peer_principal=peer)))
    log.flush()
    record = json.loads(out.getvalue())
    assert record["source_principal"] == peer
    assert record["connection_security_policy"] == "mutual_tls"


def test_a_burst_is_written_without_waiting_for_the_sweep() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    for _ in range(FLUSH_LINES):
        log.record(_Finished(reason=""))
    lines = out.getvalue().splitlines()
    assert len(lines) == FLUSH_LINES
    assert json.loads(lines[0])["reason"] is None
