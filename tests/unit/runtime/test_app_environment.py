"""A process pod's app environment: the mesh's settings win over what the runtime
inherited, so no inherited proxy setting can send the app's calls around its sidecar."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from mycelium.api.deployment import Container
from mycelium.runtime.pod_placement import LoopbackPlacement, NetnsPlacement
from mycelium.runtime.process_pods import MeshAccess, PodSpec, app_environment
from mycelium.telemetry.workload_labels import WORKLOAD_NAME_LABEL

PLACEMENT = LoopbackPlacement("127.0.64.2", "127.1.64.2", asyncio.to_thread)
MESH = MeshAccess(
    myc=["/opt/myc/bin/myc"], discovery="127.0.0.1:15012", trust_bundle=Path("root.pem")
)


def spec_of(**changes: object) -> PodSpec:
    spec = PodSpec(
        name="reviews-0",
        namespace="shop",
        labels={"app": "reviews", "version": "v2"},
        service_account="reviews",
        container=Container.model_validate(
            {"name": "reviews", "command": ["reviews"], "env": [{"name": "LEVEL", "value": "2"}]}
        ),
        restart_policy="OnFailure",
        grace_seconds=10,
        working_dir=Path(),
    )
    return replace(spec, **changes)  # type: ignore[arg-type]


def test_inherited_proxy_settings_cannot_route_around_the_sidecar() -> None:
    spec = spec_of(labels={"app": "reviews"})
    inherited = {
        "PATH": "/usr/bin",
        "no_proxy": "*",
        "ALL_PROXY": "http://corp:3128",
        "https_proxy": "http://corp:3128",
        "MYC_TOKEN": "secret",
    }

    env = app_environment(spec, PLACEMENT, MESH, inherited)

    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.64.2:15001"
    assert env["no_proxy"] == env["NO_PROXY"] == ""
    assert "ALL_PROXY" not in env
    assert "https_proxy" not in env
    assert "MYC_TOKEN" not in env  # the runtime's admin token is not the app's
    assert env["PATH"] == "/opt/myc/bin:/usr/bin"  # `myc` is found, the rest as inherited
    assert env["MYC_APP_ADDRESS"] == "127.1.64.2"
    assert env["LEVEL"] == "2"


def test_a_pod_without_a_sidecar_gets_what_it_needs_to_join_the_mesh_itself() -> None:
    env = app_environment(spec_of(sidecar=False), PLACEMENT, MESH, {"PATH": "/bin"}, "tok")

    assert "HTTP_PROXY" not in env  # there is no sidecar to send calls to
    assert env["MYC_POD_NAME"] == "reviews-0"
    assert env["MYC_POD_NAMESPACE"] == "shop"
    assert env["MYC_SERVICE_ACCOUNT"] == "reviews"
    assert env["MYC_POD_LABELS"] == "app=reviews,version=v2"
    assert env["MYC_POD_ADDRESS"] == "127.0.64.2"
    assert env["MYC_DISCOVERY"] == "127.0.0.1:15012"
    assert env["MYC_TRUST_BUNDLE"] == "root.pem"
    assert env["MYC_JOIN_TOKEN"] == "tok"


def test_a_pod_with_a_sidecar_never_sees_a_join_token() -> None:
    env = app_environment(spec_of(), PLACEMENT, MESH, {"MYC_JOIN_TOKEN": "leaked"}, "tok")
    assert "MYC_JOIN_TOKEN" not in env


def test_a_host_network_gateway_is_told_where_pods_reach_it() -> None:
    placement = replace(PLACEMENT, advertise_address="198.18.64.1")
    env = app_environment(spec_of(sidecar=False), placement, MESH, {}, "tok")
    assert env["MYC_POD_ADDRESS"] == "127.0.64.2"  # where it binds
    assert env["MYC_ADVERTISE_ADDRESS"] == "198.18.64.1"  # where it registers
    assert "MYC_ADVERTISE_ADDRESS" not in app_environment(
        spec_of(sidecar=False), PLACEMENT, MESH, {}
    )


def test_sidecars_trace_when_the_runtime_is_told_where_the_collector_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = spec_of()
    monkeypatch.delenv("MYC_TRACE_COLLECTOR", raising=False)
    monkeypatch.delenv("MYC_TRACE_SAMPLING", raising=False)
    assert "--trace-collector" not in PLACEMENT.sidecar_argv(spec, MESH)

    monkeypatch.setenv("MYC_TRACE_COLLECTOR", "http://127.0.0.1:4318")
    monkeypatch.setenv("MYC_TRACE_SAMPLING", "0.5")
    argv = PLACEMENT.sidecar_argv(spec, MESH)
    assert argv[argv.index("--trace-collector") + 1] == "http://127.0.0.1:4318"
    assert argv[argv.index("--trace-sampling") + 1] == "0.5"


def test_the_clusters_name_reaches_sidecars_and_gateways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYC_CLUSTER", "east")
    argv = PLACEMENT.sidecar_argv(spec_of(), MESH)
    assert argv[argv.index("--cluster") + 1] == "east"
    gateway = app_environment(spec_of(sidecar=False), PLACEMENT, MESH, {"MYC_CLUSTER": "east"})
    assert gateway["MYC_CLUSTER"] == "east"
    assert "MYC_CLUSTER" not in app_environment(spec_of(), PLACEMENT, MESH, {"MYC_CLUSTER": "e"})


def test_a_netns_pods_proxy_says_where_the_host_scrapes_it() -> None:
    placement = NetnsPlacement(
        address="198.18.64.7",
        netns="myc-pod",
        ip_command="ip",
        runner=asyncio.to_thread,  # type: ignore[arg-type]
        metrics_address="127.0.64.9:15020",
    )
    argv = placement.sidecar_argv(spec_of(), MESH)
    assert argv[argv.index("--metrics-advertise") + 1] == "127.0.64.9:15020"
    gateway = app_environment(spec_of(sidecar=False), placement, MESH, {})
    assert gateway["MYC_METRICS_ADVERTISE"] == "127.0.64.9:15020"


def test_pods_are_labelled_with_the_deployment_that_runs_them() -> None:
    from mycelium.api.deployment import Deployment

    deployment = Deployment.model_validate(
        {
            "apiVersion": "mycelium.io/v1",
            "kind": "Deployment",
            "metadata": {"name": "reviews-v2", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "reviews"}},
                "template": {
                    "metadata": {"labels": {"app": "reviews", "version": "v2"}},
                    "spec": {"containers": [{"name": "reviews", "command": ["reviews"]}]},
                },
            },
        }
    )
    spec = PodSpec.from_deployment(deployment, 0, Path())
    assert spec.labels[WORKLOAD_NAME_LABEL] == "reviews-v2"
    argv = PLACEMENT.sidecar_argv(replace(spec, name="reviews-v2-7f3a-0"), MESH)
    assert f"{WORKLOAD_NAME_LABEL}=reviews-v2" in argv
