"""The controller's memory of recent traffic: rows from proxies' reports summed into
edges over a window, golden metrics per service and per route, percentiles read from
Istio's latency buckets, and a series of slots that forgets what is older than it keeps."""

from __future__ import annotations

import msgspec

from mycelium.control.traffic import TrafficStore, describes_reporter, percentile
from mycelium.discovery.protocol import LATENCY_BUCKETS_MS, NodeInfo, TrafficRow


def buckets(**counts: int) -> list[int]:
    """Counts by upper bound in ms: buckets(le10=3) puts 3 requests in (5, 10]."""
    result = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for name, count in counts.items():
        result[LATENCY_BUCKETS_MS.index(float(name.removeprefix("le")))] = count
    return result


def row(source: str, service: str, requests: int, errors: int = 0, **latency: int) -> TrafficRow:
    return TrafficRow(
        source_workload=source,
        source_workload_namespace="bookinfo",
        destination_service=service,
        destination_workload=f"{service.split('.', maxsplit=1)[0]}-v1",
        destination_workload_namespace="bookinfo",
        route="split",
        protocol="http",
        mtls=True,
        requests=requests,
        errors=errors,
        latency_buckets=buckets(**latency) if latency else buckets(le10=requests),
    )


def test_reports_add_up_into_edges_with_golden_metrics() -> None:
    store = TrafficStore(slot_seconds=5, keep_seconds=60)
    store.add(100.0, [row("productpage", "reviews.bookinfo", 90, errors=9, le10=81, le100=9)])
    store.add(103.0, [row("productpage", "reviews.bookinfo", 10, le10=10)])

    [(key, totals)] = store.edges(104.0, 30).items()
    assert key[:3] == ("productpage", "bookinfo", "reviews.bookinfo")
    summary = totals.summary(30)
    assert summary["requests"] == 100
    assert summary["rps"] == round(100 / 30, 3)
    assert summary["successRate"] == 0.91
    assert summary["mtls"] == 1.0
    assert 5 < summary["p50"] <= 10  # type: ignore[operator]
    assert 50 < summary["p99"] <= 100  # type: ignore[operator]


def test_a_window_sees_only_recent_slots_and_old_ones_are_forgotten() -> None:
    store = TrafficStore(slot_seconds=5, keep_seconds=20)
    store.add(0.0, [row("productpage", "reviews.bookinfo", 7)])
    store.add(50.0, [row("productpage", "reviews.bookinfo", 3)])

    assert store.grouped(51.0, 10, "service")["reviews.bookinfo"].requests == 3
    assert store.grouped(51.0, 600, "service")["reviews.bookinfo"].requests == 10
    for step in range(10):  # 10 more slots: the first one falls out (4 are kept)
        store.add(55.0 + 5 * step, [])
    assert "reviews.bookinfo" not in store.grouped(100.0, 600, "service")


def test_golden_metrics_group_by_service_route_or_source() -> None:
    store = TrafficStore()
    store.add(
        10.0, [row("productpage", "reviews.bookinfo", 4), row("gateway", "reviews.bookinfo", 1)]
    )

    assert set(store.grouped(11.0, 30, "route")) == {"reviews.bookinfo split"}
    assert set(store.grouped(11.0, 30, "workload")) == {"bookinfo/productpage", "bookinfo/gateway"}
    series = store.series(11.0, 30, "reviews.bookinfo")
    assert [point["requests"] for point in series] == [5]


def test_percentiles_interpolate_inside_the_bucket() -> None:
    assert percentile(buckets(), 0.5) is None
    assert percentile(buckets(le10=10), 0.5) == 7.5  # halfway through (5, 10]
    assert percentile(buckets(le1=99, le5000=1), 0.99) == 1.0


def test_invented_edges_stop_at_the_limits_and_old_ones_make_room() -> None:
    store = TrafficStore(slot_seconds=5, keep_seconds=10, max_series=5, max_series_per_reporter=3)
    invented = [row("productpage", f"svc{i}.bookinfo", 1) for i in range(4)]
    assert store.add(0.0, invented, reporter="productpage-0") == 1  # 3 of its own at most
    assert store.add(0.0, [row("reviews", f"x{i}.bookinfo", 1) for i in range(3)], "r-0") == 1
    assert store.live_series == 5  # the total, whoever brings them
    # A known edge is always counted, in any slot.
    assert store.add(6.0, invented[:1], reporter="productpage-0") == 0
    assert store.grouped(7.0, 600, "service")["svc0.bookinfo"].requests == 2
    # When the slots that counted them are forgotten, their places are free again.
    assert store.add(11.0, [], reporter="") == 0
    assert store.live_series == 1  # svc0, still counted in the slot at 5 s
    assert store.add(11.0, invented[1:], reporter="productpage-0") == 1


def test_a_row_is_believed_only_about_its_reporter() -> None:
    reporter = NodeInfo(id="pp-0", namespace="bookinfo", workload="productpage")
    own_call = row("productpage", "reviews.bookinfo", 1)
    assert describes_reporter(own_call, reporter)
    served = TrafficRow(**{**msgspec.structs.asdict(own_call), "source_workload": "gateway",
                           "destination_workload": "productpage"})  # fmt: skip
    assert describes_reporter(served, reporter)
    others = TrafficRow(**{**msgspec.structs.asdict(own_call), "source_workload": "reviews"})
    assert not describes_reporter(others, reporter)
    elsewhere = NodeInfo(id="pp-1", namespace="shop", workload="productpage")
    assert not describes_reporter(own_call, elsewhere)  # the same name in another namespace
