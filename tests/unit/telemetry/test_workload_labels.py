"""The workload labels of each end, derived as Istio derives them from a workload's
name, namespace and labels; the introduction a caller sends and how far it is believed."""

from __future__ import annotations

import pytest

from mycelium.cli.proxy_options import DEFAULT_CLUSTER as CLI_DEFAULT_CLUSTER
from mycelium.telemetry.workload_labels import (
    DEFAULT_CLUSTER,
    WORKLOAD_NAME_LABEL,
    WorkloadLabels,
    encode_peer,
    parse_peer,
    workload_name,
)


def test_a_pod_is_named_by_the_deployment_that_runs_it() -> None:
    labels = {WORKLOAD_NAME_LABEL: "reviews-v2", "app": "reviews"}
    assert workload_name("reviews-v2-7f3a-0", labels) == "reviews-v2"
    # Istio's own override label is honoured too
    assert workload_name("vm-1", {"service.istio.io/workload-name": "billing"}) == "billing"
    # a registered Workload without one is its own workload
    assert workload_name("legacy-db", {}) == "legacy-db"


@pytest.mark.parametrize(
    ("labels", "service", "revision"),
    [
        # Istio's precedence: its canonical labels, the recommended labels, app/version
        (
            {
                "service.istio.io/canonical-name": "shop",
                "service.istio.io/canonical-revision": "2024-06",
                "app.kubernetes.io/name": "cart",
                "app.kubernetes.io/version": "1.2",
                "app": "c",
                "version": "v9",
            },
            "shop",
            "2024-06",
        ),
        (
            {"app.kubernetes.io/name": "cart", "app.kubernetes.io/version": "1.2", "app": "c"},
            "cart",
            "1.2",
        ),
        ({"app": "reviews", "version": "v2"}, "reviews", "v2"),
        # nothing: the workload's name, and revision "latest"
        ({}, "legacy-db", "latest"),
    ],
)
def test_canonical_service_and_revision_follow_istios_precedence(
    labels: dict[str, str], service: str, revision: str
) -> None:
    end = WorkloadLabels.of("legacy-db", "shop", labels, cluster="Kubernetes")
    assert (end.canonical_service, end.canonical_revision) == (service, revision)


def test_app_and_version_are_unknown_without_their_labels() -> None:
    end = WorkloadLabels.of("legacy-db", "shop", {}, cluster="Kubernetes")
    assert (end.app, end.version) == ("unknown", "unknown")
    # a proxy's own end: empty, as Istio writes a local label it lacks
    own = WorkloadLabels.of("legacy-db", "shop", {}, cluster="Kubernetes", local=True)
    assert (own.app, own.version) == ("", "")
    recommended = WorkloadLabels.of(
        "cart-0",
        "shop",
        {"app.kubernetes.io/name": "cart", "app.kubernetes.io/version": "1.2"},
        cluster="Kubernetes",
    )
    assert (recommended.app, recommended.version) == ("cart", "1.2")


def test_an_introduction_round_trips_and_the_certificate_names_the_namespace() -> None:
    me = WorkloadLabels.of(
        "reviews-v2-0",
        "bookinfo",
        {"app": "reviews", "version": "v2", WORKLOAD_NAME_LABEL: "reviews-v2"},
        cluster="east",
    )
    principal = "spiffe://cluster.local/ns/bookinfo/sa/reviews"
    assert parse_peer(encode_peer(me), principal) == me.with_principal(principal)
    # another namespace in the introduction than in the certificate: the certificate's
    forged = encode_peer(WorkloadLabels.of("x", "kube-system", {}, cluster="east"))
    assert parse_peer(forged, principal).namespace == "bookinfo"


def test_a_spiffe_id_alone_gives_the_namespace() -> None:
    end = WorkloadLabels.from_principal("spiffe://cluster.local/ns/shop/sa/cart")
    assert (end.namespace, end.name, end.principal) == (
        "shop",
        "unknown",
        "spiffe://cluster.local/ns/shop/sa/cart",
    )
    assert WorkloadLabels.from_principal(None) == WorkloadLabels()


def test_the_clis_default_cluster_is_telemetrys() -> None:
    """The CLI names the default without importing the proxy's modules: one value."""
    assert CLI_DEFAULT_CLUSTER == DEFAULT_CLUSTER == "Kubernetes"
