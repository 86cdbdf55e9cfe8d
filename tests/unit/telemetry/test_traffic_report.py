"""The controller's traffic rows, read from the metrics' cumulative series: each report
has only what happened since the last, split by route, with the caller's view only."""

from __future__ import annotations

from tests.support.finished import FakeClient
from tests.unit.telemetry.test_metrics import Endpoint, metrics, request

from mycelium.telemetry import FinishedRequest
from mycelium.telemetry.traffic_report import TrafficReporter


def finish(m: object, exchange: FinishedRequest, times: int = 1) -> None:
    for _ in range(times):
        m.request_finished(exchange)  # type: ignore[attr-defined]


def test_a_report_holds_what_happened_since_the_last_one() -> None:
    m = metrics(Endpoint())
    reporter = TrafficReporter(m)
    finish(m, request("outbound"), times=3)
    finish(m, request("outbound", status=503, reason="upstream_reset"))

    [row] = reporter.take_rows()
    assert (row.requests, row.errors) == (4, 1)
    assert sum(row.latency_buckets) == 4
    assert (row.source_workload, row.destination_service) == ("productpage-v1", "reviews.bookinfo")
    assert (row.destination_workload, row.mtls) == ("reviews-v2", True)

    assert reporter.take_rows() == []  # nothing new
    finish(m, request("outbound"), times=2)
    [row] = reporter.take_rows()
    assert (row.requests, row.errors, sum(row.latency_buckets)) == (2, 0, 2)


def test_denials_and_unanswered_requests_count_as_errors() -> None:
    m = metrics(Endpoint())
    reporter = TrafficReporter(m)
    for status in (200, 403, 401, 404):
        finish(m, request("outbound", status=status))
    finish(m, request("outbound", status=0, reason="downstream_disconnect"))
    [row] = reporter.take_rows()
    assert (row.requests, row.errors) == (5, 3)


def test_routes_are_rows_of_their_own() -> None:
    m = metrics(Endpoint())
    reporter = TrafficReporter(m)
    finish(m, request("outbound", rule_name="v2-canary"), times=2)
    finish(m, request("outbound"))
    rows = {row.route: row.requests for row in reporter.take_rows()}
    assert rows == {"v2-canary": 2, "default": 1}


def test_the_serving_side_does_not_report() -> None:
    m = metrics()
    reporter = TrafficReporter(m)
    finish(m, request("inbound", FakeClient(peer_principal="spiffe://td/ns/a/sa/b")))
    assert reporter.take_rows() == []
