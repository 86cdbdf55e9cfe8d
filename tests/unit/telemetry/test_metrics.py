"""ProxyMetrics without sockets: exchanges in, exposition out (parsed by
prometheus_client, as Prometheus would); reporters, label sets from the endpoint and
from the peer's introduction, response flags, histogram buckets, escaping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.support.finished import FakeClient, finished_request

from mycelium.telemetry import FinishedConnection, FinishedRequest, OpenedConnection
from mycelium.telemetry.metrics import DEFAULT_BUCKETS, ProxyMetrics
from mycelium.telemetry.workload_labels import WORKLOAD_NAME_LABEL, WorkloadLabels, encode_peer

# productpage's sidecar: the pod productpage-v1-0 of the Deployment productpage-v1
ME = WorkloadLabels.of(
    "productpage-v1-0",
    "bookinfo",
    {"app": "productpage", "version": "v1", WORKLOAD_NAME_LABEL: "productpage-v1"},
    cluster="Kubernetes",
    local=True,
)
MY_ID = "spiffe://cluster.local/ns/bookinfo/sa/productpage"
REVIEWS_ID = "spiffe://cluster.local/ns/bookinfo/sa/reviews"


@dataclass
class Endpoint:
    workload: str = "bookinfo/reviews-v2-0"  # the registered pod
    labels: dict[str, str] = field(
        default_factory=lambda: {
            "app": "reviews",
            "version": "v2",
            WORKLOAD_NAME_LABEL: "reviews-v2",
        }
    )
    identity: str = REVIEWS_ID
    mtls: bool = True


def request(side: str, downstream: FakeClient | None = None, **fields: Any) -> FinishedRequest:
    """A finished request through productpage's sidecar to reviews: GET /, 200."""
    defaults: dict[str, Any] = {
        "protocol": "HTTP/1.1",
        "method": b"GET",
        "target": b"/",
        "host": "reviews",
        "service": "reviews.bookinfo",
        "rule_name": "default",
        "status": 200,
        "reason": "",
        "cluster_name": "outbound|reviews.bookinfo",
        "upstream_host": "127.0.0.12:9080",
        "bytes_sent": 120,
        "bytes_received": 0,
    }
    return finished_request(
        side, downstream or FakeClient(peer_host="127.0.0.1"), **{**defaults, **fields}
    )


def metrics(endpoint: Endpoint | None = None) -> ProxyMetrics:
    return ProxyMetrics(ME, endpoint=lambda _cluster, _host: endpoint, own_principal=lambda: MY_ID)


def samples(text: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_the_source_reports_the_endpoint_it_chose() -> None:
    m = metrics(Endpoint())
    for _ in range(3):
        m.request_finished(request("outbound"))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    assert total.value == 3
    # Istio's label set, exactly; workloads are Deployments, never the pods
    assert total.labels == {
        "reporter": "source",
        "source_workload": "productpage-v1",
        "source_canonical_service": "productpage",
        "source_canonical_revision": "v1",
        "source_workload_namespace": "bookinfo",
        "source_principal": MY_ID,
        "source_app": "productpage",
        "source_version": "v1",
        "source_cluster": "Kubernetes",
        "destination_workload": "reviews-v2",
        "destination_workload_namespace": "bookinfo",
        "destination_principal": REVIEWS_ID,
        "destination_app": "reviews",
        "destination_version": "v2",
        "destination_service": "reviews.bookinfo.svc.cluster.local",
        "destination_canonical_service": "reviews",
        "destination_canonical_revision": "v2",
        "destination_service_name": "reviews",
        "destination_service_namespace": "bookinfo",
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "",
        "response_flags": "-",
        # Istio's caller side never claims the policy, even over mTLS
        "connection_security_policy": "unknown",
    }


def test_the_destination_reports_the_caller_it_was_introduced_to() -> None:
    m = metrics()
    caller = WorkloadLabels.of(
        "reviews-v2-3",
        "bookinfo",
        {"app": "reviews", "version": "v2", WORKLOAD_NAME_LABEL: "reviews-v2"},
        cluster="east",
    )
    client = FakeClient(peer_principal=REVIEWS_ID, peer_metadata=encode_peer(caller))
    exchange = request("inbound", client, status=503, reason="upstream_connect_failed")
    m.request_finished(exchange)  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    labels = total.labels
    assert labels["reporter"] == "destination"
    source = {k: v for k, v in labels.items() if k.startswith("source_")}
    assert source == {
        "source_workload": "reviews-v2",
        "source_canonical_service": "reviews",
        "source_canonical_revision": "v2",
        "source_workload_namespace": "bookinfo",
        "source_principal": REVIEWS_ID,
        "source_app": "reviews",
        "source_version": "v2",
        "source_cluster": "east",
    }
    assert labels["destination_workload"] == "productpage-v1"  # ME serves here
    assert labels["destination_principal"] == MY_ID
    assert labels["response_flags"] == "UF"
    assert labels["connection_security_policy"] == "mutual_tls"


def test_without_an_introduction_the_namespace_comes_from_the_spiffe_id() -> None:
    m = metrics()
    client = FakeClient(peer_principal="spiffe://cluster.local/ns/shop/sa/cart")
    m.request_finished(request("inbound", client))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    assert total.labels["source_workload_namespace"] == "shop"
    assert total.labels["source_workload"] == "unknown"


def test_an_introduction_cannot_claim_another_namespace_than_its_certificate() -> None:
    m = metrics()
    liar = encode_peer(WorkloadLabels.of("admin", "kube-system", {}, cluster="Kubernetes"))
    client = FakeClient(peer_principal="spiffe://cluster.local/ns/shop/sa/cart", peer_metadata=liar)
    m.request_finished(request("inbound", client))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    assert total.labels["source_workload_namespace"] == "shop"


def test_a_passthrough_request_is_named_by_its_host() -> None:
    m = metrics(None)
    m.request_finished(
        request("outbound", service="", host="example.test:8080", cluster_name="passthrough")  # type: ignore[arg-type]
    )
    (total,) = samples(m.render())["istio_requests_total"]
    labels = total.labels
    assert (labels["destination_service"], labels["destination_service_name"]) == (
        "example.test:8080",  # the Host, verbatim
        "PassthroughCluster",
    )
    assert labels["destination_service_namespace"] == "unknown"
    assert labels["destination_workload"] == "unknown"


def test_the_served_side_names_its_own_namespace_and_falls_back_to_its_canonical_name() -> None:
    m = metrics()
    m.request_finished(request("inbound", service=""))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    labels = total.labels
    assert (labels["destination_service"], labels["destination_service_name"]) == (
        "productpage",
        "productpage",
    )
    assert labels["destination_service_namespace"] == "bookinfo"


def test_plaintext_callers_are_none_and_unknown() -> None:
    m = metrics()
    m.request_finished(request("inbound"))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    assert total.labels["connection_security_policy"] == "none"
    assert total.labels["source_principal"] == "unknown"
    assert total.labels["destination_principal"] == "unknown"


def test_histograms_are_cumulative_with_envoys_buckets() -> None:
    m = metrics(Endpoint())
    m.request_finished(request("outbound", bytes_sent=7, bytes_received=3000))  # type: ignore[arg-type]
    found = samples(m.render())
    buckets = {s.labels["le"]: s.value for s in found["istio_response_bytes_bucket"]}
    assert len(buckets) == len(DEFAULT_BUCKETS) + 1
    assert (buckets["5"], buckets["10"], buckets["+Inf"]) == (0, 1, 1)
    requests = {s.labels["le"]: s.value for s in found["istio_request_bytes_bucket"]}
    assert (requests["2500"], requests["5000"]) == (0, 1)
    assert found["istio_request_bytes_sum"][0].value == 3000
    assert found["istio_request_duration_milliseconds_count"][0].value == 1


def test_requests_without_a_body_fill_the_first_request_bytes_bucket() -> None:
    m = metrics(Endpoint())
    for received in (0, 0, 0, 700):
        m.request_finished(request("outbound", bytes_received=received))  # type: ignore[arg-type]
    found = samples(m.render())
    requests = {s.labels["le"]: s.value for s in found["istio_request_bytes_bucket"]}
    assert (requests["0.5"], requests["500"], requests["1000"], requests["+Inf"]) == (3, 3, 4, 4)
    assert found["istio_request_bytes_count"][0].value == 4


def test_grpc_requests_say_so_with_their_status() -> None:
    m = metrics(Endpoint())
    m.request_finished(
        request("outbound", protocol="HTTP/2", grpc=True, grpc_status="5")  # type: ignore[arg-type]
    )
    (total,) = samples(m.render())["istio_requests_total"]
    assert (total.labels["request_protocol"], total.labels["grpc_response_status"]) == (
        "grpc",
        "5",
    )


def test_tcp_connections_count_bytes_both_ways() -> None:
    m = metrics(Endpoint())
    finished = FinishedConnection(
        direction="outbound",
        service="db.bookinfo",
        cluster="outbound|db.bookinfo",
        upstream_host="127.0.0.40:5432",
        peer="127.0.0.1",
        peer_principal=None,
        mtls_upstream=True,
        bytes_received=10,
        bytes_sent=25,
        duration=0.1,
        ended_by="completed",
    )
    opened = OpenedConnection(
        direction="outbound",
        service="db.bookinfo",
        cluster="outbound|db.bookinfo",
        upstream_host="127.0.0.40:5432",
        peer_principal=None,
        mtls_upstream=True,
    )
    for _ in range(2):
        m.connection_opened(opened)
        m.connection_finished(finished)
    found = samples(m.render())
    assert found["istio_tcp_connections_opened_total"][0].value == 2
    assert found["istio_tcp_connections_closed_total"][0].value == 2
    assert found["istio_tcp_received_bytes_total"][0].value == 20
    sent = found["istio_tcp_sent_bytes_total"][0]
    assert sent.value == 50
    assert sent.labels["request_protocol"] == "tcp"
    assert sent.labels["destination_service"] == "db.bookinfo.svc.cluster.local"
    assert sent.labels["destination_workload"] == "reviews-v2"
    # as Istio's TCP metrics: no response code or gRPC status
    assert "response_code" not in sent.labels
    assert "grpc_response_status" not in sent.labels


def test_a_config_change_relabels_without_losing_counts() -> None:
    endpoint = Endpoint()
    m = metrics(endpoint)
    m.request_finished(request("outbound"))  # type: ignore[arg-type]
    endpoint.labels = {**endpoint.labels, "version": "v3"}
    m.config_changed()
    m.request_finished(request("outbound"))  # type: ignore[arg-type]
    versions = {
        s.labels["destination_version"]: s.value
        for s in samples(m.render())["istio_requests_total"]
    }
    assert versions == {"v2": 1, "v3": 1}


def test_label_values_are_escaped() -> None:
    m = metrics(Endpoint(workload='ns/we"ird\\name', labels={}))
    m.request_finished(request("outbound"))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    assert total.labels["destination_workload"] == 'we"ird\\name'


def test_a_tcp_connections_labels_are_worked_out_once_per_endpoint() -> None:
    looked_up: list[str] = []

    def endpoint(_cluster: str, address: str) -> Endpoint:
        looked_up.append(address)
        return Endpoint()

    m = ProxyMetrics(ME, endpoint=endpoint, own_principal=lambda: MY_ID)
    opened = OpenedConnection(
        direction="outbound",
        service="db.bookinfo",
        cluster="outbound|db.bookinfo",
        upstream_host="127.0.0.40:5432",
        peer_principal=None,
        mtls_upstream=True,
    )
    for _ in range(3):
        m.connection_opened(opened)
    assert looked_up == ["127.0.0.40:5432"]


def test_grpc_message_counters_carry_the_workload_labels_alone() -> None:
    m = metrics(Endpoint())
    for messages in ((1, 1), (3, 5)):
        m.request_finished(
            request(  # type: ignore[arg-type]
                "outbound", protocol="HTTP/2", grpc=True, grpc_status="0", grpc_messages=messages
            )
        )
    m.request_finished(request("outbound"))  # type: ignore[arg-type]  # plain HTTP: none
    found = samples(m.render())
    (sent,) = found["istio_request_messages_total"]
    (answered,) = found["istio_response_messages_total"]
    assert (sent.value, answered.value) == (4, 6)
    # Istio's 20: no protocol, code, status, flags or security policy
    assert len(sent.labels) == 20
    assert "response_code" not in sent.labels
    assert sent.labels["destination_workload"] == "reviews-v2"


def test_the_build_is_one_gauge_as_istios_mesh_dashboard_lists_it() -> None:
    (build,) = samples(metrics().render())["istio_build"]
    assert build.labels["component"] == "proxy"
    assert build.value == 1


def test_a_request_that_ends_after_its_endpoint_left_the_config_keeps_its_labels() -> None:
    """A rollout: the old pod's endpoint is removed while a request to it is in
    flight; the request ends after the config change and is still reviews-v2's."""
    endpoints: dict[str, Endpoint] = {"127.0.0.12:9080": Endpoint()}
    m = ProxyMetrics(
        ME, endpoint=lambda _cluster, key: endpoints.get(key), own_principal=lambda: MY_ID
    )
    m.request_finished(request("outbound"))  # type: ignore[arg-type]
    endpoints.clear()  # the pod rolled out
    m.config_changed()
    m.request_finished(request("outbound"))  # type: ignore[arg-type]
    (total,) = samples(m.render())["istio_requests_total"]
    assert (total.value, total.labels["destination_workload"]) == (2, "reviews-v2")
