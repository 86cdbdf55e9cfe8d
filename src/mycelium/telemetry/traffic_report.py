"""What a proxy tells its controller about the traffic it forwarded: the data of the
dashboard's graph and golden metrics, `myc stat` and `myc top`.

The controller cannot scrape proxies inside netns pods, so every `REPORT_SECONDS` each
proxy sends a `TelemetryReport` on its discovery stream. A row per source workload,
destination service, destination workload, route, protocol and mTLS, with request and
error counts and the latency histogram (Istio's buckets), for the requests it sent as
the caller (the `source` reporter, as Istio's graphs use; a gateway is the caller of
what it forwards). The label values are the metrics' own (`ProxyMetrics.base_for`), so
the dashboard and a Prometheus scrape of the same proxy agree.

`TrafficReporter` is a request observer (a dict increment per request); `take_rows`
hands over what accumulated since the last call and starts afresh.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING

from mycelium.discovery.protocol import LATENCY_BUCKETS_MS, TrafficRow
from mycelium.telemetry.metrics import CLUSTER_DOMAIN, LabelSet, ProxyMetrics

if TYPE_CHECKING:
    from mycelium.proxy.access_log import LoggedExchange

REPORT_SECONDS = 5.0
# Besides 5xx, what counts against a success rate: no answer at all (0), and a denial
# (401, 403), which a mesh graph shows as an error edge as Kiali does.
FAILED_STATUSES = frozenset({0, 401, 403})


class _Counts:
    __slots__ = ("errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)


class TrafficReporter:
    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics
        self._counts: dict[tuple[LabelSet, str, bool], _Counts] = {}

    def request_finished(self, exchange: LoggedExchange) -> None:
        if exchange.listener.kind == "inbound":
            return  # the caller's proxy reports it
        key = (self._metrics.base_for(exchange), exchange.rule_name, exchange.grpc)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = _Counts()
        counts.requests += 1
        status = exchange.status
        if status >= 500 or status in FAILED_STATUSES:
            counts.errors += 1
        elapsed_ms = (time.monotonic() - exchange.started) * 1000.0
        counts.latency[bisect_left(LATENCY_BUCKETS_MS, elapsed_ms)] += 1

    def take_rows(self) -> list[TrafficRow]:
        counted, self._counts = self._counts, {}
        rows = []
        for (base, route, grpc), counts in counted.items():
            labels = base.labels
            rows.append(
                TrafficRow(
                    source_workload=labels[1],
                    source_namespace=labels[2],
                    destination_service=labels[7].removesuffix(f".{CLUSTER_DOMAIN}"),
                    destination_workload=labels[5],
                    destination_namespace=labels[6],
                    route=route,
                    protocol="grpc" if grpc else "http",
                    mtls=labels[10] == "mutual_tls",
                    requests=counts.requests,
                    errors=counts.errors,
                    latency_buckets=counts.latency,
                )
            )
        return rows
