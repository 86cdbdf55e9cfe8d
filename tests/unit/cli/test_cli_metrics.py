"""`myc metrics`: which discovered proxies a target names, and the target labels joined
to each sample as Prometheus joins them."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mycelium.cli.commands.metrics import selected, with_target_labels
from mycelium.cli.errors import CliError


def group(pod: str, workload: str, namespace: str = "bookinfo") -> dict[str, object]:
    return {
        "targets": [f"{pod}:15020"],
        "labels": {"namespace": namespace, "pod": pod, "workload": workload, "role": "sidecar"},
    }


GROUPS = [
    {"targets": ["127.0.0.1:15014"], "labels": {"role": "controller"}},
    group("reviews-v2-aa-0", "reviews-v2"),
    group("reviews-v2-aa-1", "reviews-v2"),
    group("reviews-v1-bb-0", "reviews-v1"),
    group("reviews-v2-cc-0", "reviews-v2", namespace="staging"),
]


def pods(found: list[dict[str, object]]) -> list[str]:
    return [g["labels"]["pod"] for g in found]  # type: ignore[index]


def test_a_deployment_names_its_pods_in_the_namespace() -> None:
    assert pods(selected(GROUPS, "deploy/reviews-v2", "bookinfo")) == [
        "reviews-v2-aa-0",
        "reviews-v2-aa-1",
    ]
    assert pods(selected(GROUPS, "reviews-v2", "staging")) == ["reviews-v2-cc-0"]
    assert pods(selected(GROUPS, "pod/reviews-v1-bb-0", "bookinfo")) == ["reviews-v1-bb-0"]
    assert selected(GROUPS, "pod/reviews-v2", "bookinfo") == []  # a pod, not a workload


def test_other_kinds_are_refused_with_the_forms_accepted() -> None:
    with pytest.raises(CliError, match="deploy/NAME"):
        selected(GROUPS, "svc/reviews", "bookinfo")


def test_target_labels_join_every_sample_and_parse_back() -> None:
    exposition = (
        "# HELP istio_requests_total Requests.\n"
        "# TYPE istio_requests_total counter\n"
        'istio_requests_total{reporter="destination",response_code="200",'
        'grpc_response_status=""} 7\n'
        "# TYPE mycelium_proxy_downstream_connections gauge\n"
        "mycelium_proxy_downstream_connections 2\n"
        "# TYPE up_flag gauge\n"
        "up_flag{} 1\n"
        "# HELP istio_tcp_sent_bytes_total Bytes sent.\n"
        "# TYPE istio_tcp_sent_bytes_total counter\n"
    )
    text = with_target_labels(exposition, {"instance": "127.0.64.9:15020", "pod": 'a"b'})
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["istio_requests_total"].labels == {
        "instance": "127.0.64.9:15020",
        "pod": 'a"b',
        "reporter": "destination",
        "response_code": "200",
    }
    assert samples["istio_requests_total"].value == 7
    assert samples["mycelium_proxy_downstream_connections"].labels["instance"] == (
        "127.0.64.9:15020"
    )
    assert samples["up_flag"].labels == {"instance": "127.0.64.9:15020", "pod": 'a"b'}
    assert "# TYPE istio_requests_total counter" in text
    assert "istio_tcp_sent_bytes" not in text  # a family without samples: nothing stored


def test_a_scraped_label_a_target_label_would_hide_is_exported_as_prometheus_does() -> None:
    exposition = (
        '# TYPE mycelium_proxy_config_info gauge\nmycelium_proxy_config_info{version="55b1"} 1\n'
    )
    text = with_target_labels(exposition, {"version": "v2"})
    [sample] = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert sample.labels == {"version": "v2", "exported_version": "55b1"}
