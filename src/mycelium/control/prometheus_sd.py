"""Prometheus HTTP service discovery: every connected proxy's metrics endpoint.

Prometheus' `http_sd_configs` polls a URL for a JSON list of target groups, each
`{"targets": ["host:port"], "labels": {...}}`. The controller answers with one group
per connected proxy that said where its metrics are reached from the host
(`NodeInfo.metrics`: the node agent forwards a host address to each netns pod's
15020), and one for itself, so one scrape job finds the whole mesh and follows pods
as they come and go: no address is written by hand.

Each group's labels name what a Kubernetes scrape config would have attached (the
pod's `namespace` and `pod`, its `app` and `version`, and `workload`: the Deployment,
as the standard metrics name it), and set the scrape path (`__metrics_path__`). These
are target labels, added to every series of the target; Istio's standard metrics
already carry their own workload labels, which these do not rename.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mycelium.discovery.protocol import NodeInfo
from mycelium.telemetry.workload_labels import workload_name

PROXY_METRICS_PATH = "/stats/prometheus"
CONTROLLER_METRICS_PATH = "/metrics"


def proxy_target(node: NodeInfo) -> dict[str, Any] | None:
    """A proxy's target group, or None when it did not say where it is scraped."""
    if not node.metrics:
        return None
    labels = {
        "__metrics_path__": PROXY_METRICS_PATH,
        "namespace": node.namespace,
        "pod": node.workload or node.id,
        "workload": workload_name(node.workload or node.id, node.labels),
        "role": node.role,
    }
    for key in ("app", "version"):
        if key in node.labels:
            labels[key] = node.labels[key]
    return {"targets": [node.metrics], "labels": labels}


def scrape_targets(nodes: Iterable[NodeInfo], controller: str) -> list[dict[str, Any]]:
    """Prometheus' target groups: the controller's own metrics at `controller`
    (host:port), then each proxy's, sorted so that a poll without change reads the same."""
    groups = [
        {
            "targets": [controller],
            "labels": {"__metrics_path__": CONTROLLER_METRICS_PATH, "role": "controller"},
        }
    ]
    proxies = [group for node in nodes if (group := proxy_target(node)) is not None]
    proxies.sort(key=lambda group: (group["labels"]["namespace"], group["labels"]["pod"]))
    return groups + proxies
