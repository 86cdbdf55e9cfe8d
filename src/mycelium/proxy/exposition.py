"""The proxy's Prometheus exposition: Istio's standard metrics and the proxy's own.

Served on 15020 at `/stats/prometheus` (Istio's path) and `/metrics`. The standard
metrics come from `telemetry.metrics.ProxyMetrics`; the proxy's own (`mycelium_proxy_*`)
are read here, at scrape time, from what the core already keeps: its counters, the
discovery client's ACK/NACK counts, the SVID, the clusters' outlier detectors. Nothing
here runs per request.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mycelium.telemetry.metrics import CONTENT_TYPE, escape, header

if TYPE_CHECKING:
    from mycelium.proxy.core import ProxyCore

__all__ = ["CONTENT_TYPE", "render"]

# Core counters with a metric of their own: (counter, metric name, help).
_COUNTED = (
    ("config_accepted", "mycelium_proxy_config_accepted_total", "Config pushes accepted (ACK)."),
    ("reason_rate_limited", "mycelium_proxy_rate_limited_total", "Requests rate limited (429)."),
    (
        "authz_denied",
        "mycelium_proxy_authz_denied_total",
        "Requests and connections an AuthorizationPolicy denied.",
    ),
)


def render(core: ProxyCore) -> str:
    """The whole exposition: the standard metrics (when recorded) and the proxy's own."""
    parts = [core.metrics.render()] if core.metrics is not None else []
    parts.append(render_own(core))
    return "".join(parts)


def render_own(core: ProxyCore) -> str:
    out: list[str] = []
    counters = core.counter_values()
    client = core.discovery
    version = core.active.version
    header(out, "mycelium_proxy_config_info", "gauge", "The config version in force.")
    out.append(f'mycelium_proxy_config_info{{version="{escape(version)}"}} 1')
    for counter, name, text in _COUNTED:
        header(out, name, "counter", text)
        out.append(f"{name} {counters.get(counter, 0)}")
    header(out, "mycelium_proxy_config_rejected_total", "counter", "Config pushes NACKed.")
    out.append(f"mycelium_proxy_config_rejected_total {client.nacks if client else 0}")
    svid = core.svid
    if svid is not None:
        left = (svid.expires_at - datetime.now(UTC)).total_seconds()
        header(
            out,
            "mycelium_proxy_certificate_expiry_seconds",
            "gauge",
            "Seconds until this proxy's certificate (SVID) expires.",
        )
        out.append(f"mycelium_proxy_certificate_expiry_seconds {left:.3f}")
    _clusters(out, core)
    header(out, "mycelium_proxy_downstream_connections", "gauge", "Client connections open.")
    out.append(f"mycelium_proxy_downstream_connections {len(core.connections) + len(core.relays)}")
    header(
        out,
        "mycelium_proxy_events_total",
        "counter",
        "Every counter the proxy keeps (as the admin /stats shows them), by name.",
    )
    for event, value in sorted(counters.items()):
        out.append(f'mycelium_proxy_events_total{{event="{escape(event)}"}} {value}')
    return "\n".join(out) + "\n"


# Per cluster, summed over its service ports: (metric, kind, help), in `_clusters` order.
_PER_CLUSTER = (
    ("mycelium_proxy_outlier_ejections_total", "counter", "Endpoints ejected, by cluster."),
    ("mycelium_proxy_outlier_ejected", "gauge", "Endpoints ejected now, by cluster."),
    ("mycelium_proxy_retries_total", "counter", "Retries the retry budget allowed."),
    (
        "mycelium_proxy_retry_budget_exhausted_total",
        "counter",
        "Retries the retry budget refused (the request failed with what it had).",
    ),
)


def _clusters(out: list[str], core: ProxyCore) -> None:
    clock = time.monotonic()
    totals: dict[str, list[int]] = {}
    for cluster in core.clusters:
        outlier, budget = cluster.outlier, cluster.retry_budget
        row = totals.setdefault(cluster.name, [0, 0, 0, 0])
        row[0] += outlier.ejections_total
        row[1] += sum(1 for e in cluster.endpoints if outlier.is_ejected(e, clock))
        row[2] += budget.retries
        row[3] += budget.refused
    for i, (name, kind, text) in enumerate(_PER_CLUSTER):
        header(out, name, kind, text)
        for cluster_name, row in sorted(totals.items()):
            out.append(f'{name}{{cluster="{escape(cluster_name)}"}} {row[i]}')
