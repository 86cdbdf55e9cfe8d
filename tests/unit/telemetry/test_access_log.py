"""The access log's records and its buffering: lines wait for the sweep's flush, or for
a burst to fill the buffer."""

from __future__ import annotations

import io
import json
import random
import time

import pytest
from tests.support.finished import FakeClient as _Client
from tests.support.finished import finished_request as _Finished

from mycelium.telemetry import FinishedConnection
from mycelium.telemetry.access_log import FLUSH_LINES, AccessLog


def test_a_record_waits_for_the_flush_then_reads_as_json() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    log.request_finished(_Finished())
    assert out.getvalue() == ""

    log.flush()

    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["protocol"] == "HTTP/2"
    assert record["direction"] == "outbound"
    assert record["path"] == "/ratings.Ratings/Get"
    assert record["reason"] == "circuit_open"
    assert record["response_flags"] == "UO"
    assert record["upstream_host"] is None  # never reached an endpoint
    assert record["response_duration_ms"] is None  # no upstream response head
    assert record["bytes_received"] == 5
    assert record["bytes_sent"] == 17
    assert record["client"] == "198.18.0.9"
    assert record["duration_ms"] >= 0
    assert record["source_principal"] is None
    assert record["connection_security_policy"] == "none"


def test_a_request_over_mtls_is_logged_with_the_peers_spiffe_id() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    peer = "spiffe://cluster.local/ns/default/sa/productpage"
    log.request_finished(_Finished(downstream=_Client(peer_principal=peer)))
    log.flush()
    record = json.loads(out.getvalue())
    assert record["source_principal"] == peer
    assert record["connection_security_policy"] == "mutual_tls"


def test_a_burst_is_written_without_waiting_for_the_sweep() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    for _ in range(FLUSH_LINES):
        log.request_finished(_Finished(reason=""))
    lines = out.getvalue().splitlines()
    assert len(lines) == FLUSH_LINES
    assert json.loads(lines[0])["reason"] is None


def test_time_to_first_byte_is_when_the_upstreams_head_came() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    started = time.monotonic() - 1.0
    log.request_finished(
        _Finished(
            status=200,
            reason="",
            upstream_host="198.18.0.20:9090",
            started=started,
            response_head_at=started + 0.25,
        )
    )
    log.flush()
    record = json.loads(out.getvalue())
    assert record["response_flags"] == "-"
    assert record["response_duration_ms"] == 250.0
    assert record["duration_ms"] >= 1000.0


def _connection(ended_by: str = "completed") -> FinishedConnection:
    return FinishedConnection(
        direction="outbound",
        service="mysql.default",
        cluster="mysql.default|3306",
        upstream_host="198.18.0.30:3306",
        peer="198.18.0.9",
        peer_principal=None,
        mtls_upstream=True,
        bytes_received=120,
        bytes_sent=4096,
        duration=2.5,
        ended_by=ended_by,
    )


def test_a_tcp_connection_is_a_line_of_its_own() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    log.connection_finished(_connection())
    log.flush()
    record = json.loads(out.getvalue())
    assert record["protocol"] == "TCP"
    assert record["direction"] == "outbound"
    assert record["service"] == "mysql.default"
    assert record["upstream_cluster"] == "mysql.default|3306"
    assert record["upstream_host"] == "198.18.0.30:3306"
    assert record["upstream_mtls"] is True
    assert record["client"] == "198.18.0.9"
    assert (record["bytes_received"], record["bytes_sent"]) == (120, 4096)
    assert record["duration_ms"] == 2500.0
    assert record["ended_by"] == "completed"
    assert record["response_flags"] == "-"


def test_a_tcp_connection_that_could_not_connect_is_flagged_uf() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    log.connection_finished(_connection("connect_failed"))
    log.flush()
    assert json.loads(out.getvalue())["response_flags"] == "UF"


def test_sampling_keeps_about_its_share_of_successes_and_every_error() -> None:
    out = io.StringIO()
    log = AccessLog(out, sampling=0.1, rng=random.Random(7))
    for _ in range(1000):
        log.request_finished(_Finished(status=200, reason=""))
    for _ in range(50):
        log.request_finished(_Finished(status=503, reason="circuit_open"))
        log.request_finished(_Finished(status=502, reason=""))  # the upstream's own 5xx
        log.connection_finished(_connection("upstream_lost"))
    log.flush()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    successes = [r for r in records if r.get("status") == 200]
    assert 60 <= len(successes) <= 140
    assert sum(1 for r in records if r.get("status") == 503) == 50
    assert sum(1 for r in records if r.get("status") == 502) == 50
    assert sum(1 for r in records if r["protocol"] == "TCP") == 50
    assert log.dropped == 1000 - len(successes)


def test_sampling_zero_logs_only_errors() -> None:
    out = io.StringIO()
    log = AccessLog(out, sampling=0.0)
    log.request_finished(_Finished(status=200, reason=""))
    log.request_finished(_Finished(status=0, reason=""))  # the client left before any response
    log.connection_finished(_connection())
    log.flush()
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["response_flags"] == "DC"


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_a_sampling_ratio_outside_zero_to_one_is_refused(ratio: float) -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        AccessLog(io.StringIO(), sampling=ratio)
