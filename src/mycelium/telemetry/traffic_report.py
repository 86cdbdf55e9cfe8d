"""What a proxy tells its controller about the traffic it forwarded: the data of the
dashboard's graph and golden metrics, `myc stat` and `myc top`.

The controller cannot scrape proxies inside netns pods, so every `REPORT_SECONDS` each
proxy sends a `TelemetryReport` on its discovery stream. A row per source workload,
destination service, destination workload, route, protocol and mTLS, with request and
error counts and the latency histogram (Istio's buckets), for the requests it sent as
the caller (the `source` reporter, as Istio's graphs use; a gateway is the caller of
what it forwards). `ProxyMetrics` counts them as it records each request (one label
lookup for both), so the dashboard and a Prometheus scrape of the same proxy agree;
`TrafficReporter.take_rows` hands over what accumulated since the last call.
"""

from __future__ import annotations

from mycelium.discovery.protocol import TrafficRow
from mycelium.telemetry.metrics import CLUSTER_DOMAIN, ProxyMetrics

REPORT_SECONDS = 5.0


class TrafficReporter:
    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics
        metrics.traffic = {}

    def take_rows(self) -> list[TrafficRow]:
        counted, self._metrics.traffic = self._metrics.traffic or {}, {}
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
