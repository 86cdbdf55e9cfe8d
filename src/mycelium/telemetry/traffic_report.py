"""What a proxy tells its controller about the traffic it forwarded: the data of the
dashboard's graph and golden metrics, `myc stat` and `myc top`.

The controller cannot scrape proxies inside netns pods, so every `REPORT_SECONDS` each
proxy sends a `TelemetryReport` on its discovery stream. A row per source workload,
destination service, destination workload, route, protocol and mTLS, with request and
error counts and the latency histogram (Istio's buckets), for the requests it sent as
the caller (the `source` reporter, as Istio's graphs use; a gateway is the caller of
what it forwards). The rows are read from `ProxyMetrics`' own request series, so a
request is counted once, and the dashboard and a Prometheus scrape of the same proxy
agree; `TrafficReporter.take_rows` hands over what accumulated since the last call.
"""

from __future__ import annotations

from mycelium.discovery.protocol import LATENCY_BUCKETS_MS, TrafficRow
from mycelium.telemetry.metrics import CLUSTER_DOMAIN, LabelSet, ProxyMetrics

REPORT_SECONDS = 5.0

# Besides 5xx, what counts against a success rate in the controller's reports: no
# answer at all (0), and a denial (401, 403), which a mesh graph shows as an error
# edge as Kiali does.
FAILED_STATUSES = frozenset({0, 401, 403})


class _Row:
    __slots__ = ("errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)


class TrafficReporter:
    """The rows since the last report, as differences of the metrics' cumulative series
    (off the hot path: once per report, a pass over the series)."""

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics
        # per series key: its count and duration buckets at the last report
        self._reported: dict[tuple[object, ...], tuple[int, list[int]]] = {}

    def take_rows(self) -> list[TrafficRow]:
        rows: dict[tuple[LabelSet, str, bool], _Row] = {}
        reported = self._reported
        for key, series in list(self._metrics.requests.items()):
            base, route, grpc, status, _grpc_status, _flags = key
            assert isinstance(base, LabelSet)
            if base.reporter != "source":  # reported by the caller only
                continue
            count, latency = reported.get(key, (0, None))
            new = series.count - count
            if not new:
                continue
            duration = series.duration
            reported[key] = (series.count, list(duration))
            assert isinstance(route, str)
            row = rows.get((base, route, bool(grpc)))
            if row is None:
                row = rows[(base, route, bool(grpc))] = _Row()
            row.requests += new
            if isinstance(status, int) and (status >= 500 or status in FAILED_STATUSES):
                row.errors += new
            into = row.latency
            if latency is None:
                for i, n in enumerate(duration):
                    into[i] += n
            else:
                for i, n in enumerate(duration):
                    into[i] += n - latency[i]
        return [_traffic_row(base, route, grpc, row) for (base, route, grpc), row in rows.items()]


def _traffic_row(base: LabelSet, route: str, grpc: bool, row: _Row) -> TrafficRow:
    return TrafficRow(
        source_workload=base.source.name,
        source_workload_namespace=base.source.namespace,
        destination_service=base.service[0].removesuffix(f".{CLUSTER_DOMAIN}"),
        destination_workload=base.destination.name,
        destination_workload_namespace=base.destination.namespace,
        route=route,
        protocol="grpc" if grpc else "http",
        mtls=base.mtls,
        requests=row.requests,
        errors=row.errors,
        latency_buckets=row.latency,
    )
