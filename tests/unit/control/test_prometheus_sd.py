"""Prometheus HTTP service discovery from the connected proxies: one target group per
proxy that says where it is scraped, with its pod's labels and the scrape path, and
the controller's own metrics."""

from __future__ import annotations

from mycelium.control.prometheus_sd import scrape_targets
from mycelium.discovery.protocol import NodeInfo
from mycelium.telemetry.workload_labels import WORKLOAD_NAME_LABEL


def pod(name: str, metrics: str | None, **labels: str) -> NodeInfo:
    return NodeInfo(
        id=f"bookinfo.{name}",
        namespace="bookinfo",
        workload=name,
        labels=labels,
        metrics=metrics,
    )


def test_each_scrapable_proxy_is_a_target_with_its_pods_labels() -> None:
    nodes = [
        pod(
            "reviews-v2-0",
            "127.0.64.9:15020",
            app="reviews",
            version="v2",
            **{WORKLOAD_NAME_LABEL: "reviews-v2"},
        ),
        pod("details-v1-0", "127.0.64.7:15020", app="details"),
        pod("batch-0", None),  # said nowhere: nothing to scrape
    ]
    controller, details, reviews = scrape_targets(nodes, "127.0.0.1:15014")
    assert controller == {
        "targets": ["127.0.0.1:15014"],
        "labels": {"__metrics_path__": "/metrics", "role": "controller"},
    }
    assert reviews == {
        "targets": ["127.0.64.9:15020"],
        "labels": {
            "__metrics_path__": "/stats/prometheus",
            "namespace": "bookinfo",
            "pod": "reviews-v2-0",
            "workload": "reviews-v2",
            "role": "sidecar",
            "app": "reviews",
            "version": "v2",
        },
    }
    # sorted by namespace and pod; without the workload label, the pod is its own
    assert details["labels"]["workload"] == "details-v1-0"
    assert "version" not in details["labels"]


def test_a_mesh_without_proxies_lists_the_controller_alone() -> None:
    assert [group["labels"]["role"] for group in scrape_targets([], "10.0.0.1:15014")] == [
        "controller"
    ]
