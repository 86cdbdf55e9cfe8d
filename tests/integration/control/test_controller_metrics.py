"""The controller's own metrics at GET /metrics on its REST port: scraped without a
token from a real controller with real sidecars connected, and parsed with
prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

from tests.support.controller import Mesh, hello_answer, running_controller
from tests.support.metrics_scrape import scrape_controller, value
from tests.support.polling import eventually
from tests.support.proxy_mesh import RATINGS, ProxyMesh, serving_sidecar

from mycelium.control.rest_api import API_BURST
from mycelium.discovery import protocol as p


async def test_a_synced_sidecar_shows_in_the_controllers_metrics(proxy_mesh: ProxyMesh) -> None:
    mesh = proxy_mesh
    version = mesh.caller.core.active.version
    await mesh.apply(RATINGS.format(port=mesh.app_port))  # one more resource
    assert (await mesh.get("/")).status == 200  # the caller subscribes to reviews
    await mesh.settle(version)
    sessions = mesh.controller.discovery.sessions
    await eventually(lambda: sessions["productpage-0"].state == "synced", what="an ACK")

    samples = await scrape_controller(mesh.controller)

    assert value(samples, "mycelium_controller_connected_proxies", role="sidecar") == 1
    assert value(samples, "mycelium_controller_connected_proxies", role="gateway") == 0
    assert value(samples, "mycelium_controller_proxies_by_sync_state", state="synced") == 1
    assert value(samples, "mycelium_controller_proxies_by_sync_state", state="nack") == 0
    assert value(samples, "mycelium_controller_pushes_total") >= 1
    assert value(samples, "mycelium_controller_acks_total") >= 1
    assert value(samples, "mycelium_controller_nacks_total") == 0
    acks = value(samples, "mycelium_controller_acks_total")
    assert value(samples, "mycelium_controller_push_latency_seconds_count") == acks
    assert value(samples, "mycelium_controller_push_latency_seconds_sum") > 0
    store = "mycelium_controller_store_operation_seconds_count"
    assert value(samples, store, operation="range") >= 1  # the listing at start
    assert value(samples, store, operation="txn") >= 2  # two applies
    compiled = "mycelium_controller_config_compile_seconds_count"
    assert value(samples, compiled, bundle="inbound") >= 1
    assert value(samples, compiled, bundle="service") >= 1
    assert value(samples, "mycelium_controller_config_revision") == mesh.controller.state.revision
    assert value(samples, "mycelium_controller_taps_active") == 0
    assert "mycelium_controller_store_errors_total" not in samples  # none happened

    # The request above is reported to the controller (at once, not in 5 s).
    mesh.caller.core.report_traffic()
    discovery = mesh.controller.discovery
    await eventually(lambda: discovery.telemetry_reports >= 1, what="a telemetry report")
    samples = await scrape_controller(mesh.controller)
    assert value(samples, "mycelium_controller_telemetry_reports_total") >= 1


async def test_a_registering_sidecar_counts_its_put_lease_and_svid(proxy_mesh: ProxyMesh) -> None:
    mesh = proxy_mesh
    async with serving_sidecar(mesh, "ratings-0", "127.0.0.21"):
        await eventually(
            lambda: mesh.controller.state.get("Workload", "default", "ratings-0") is not None,
            what="the workload registered",
        )
        samples = await scrape_controller(mesh.controller)
    assert value(samples, "mycelium_controller_connected_proxies", role="sidecar") == 2
    store = "mycelium_controller_store_operation_seconds_count"
    assert value(samples, store, operation="put") >= 1
    assert value(samples, store, operation="grant_lease") >= 1
    assert value(samples, "mycelium_controller_svids_issued_total") >= 1
    accepted = "mycelium_controller_discovery_streams_accepted_total"
    assert value(samples, accepted, proven_by="join_token") >= 1


async def test_metrics_need_no_token_and_are_not_rate_limited(mesh: Mesh) -> None:
    url = f"{mesh.api.base}/metrics"
    for _ in range(API_BURST + 10):  # past what /api/ lets one client send at once
        async with mesh.api.session.get(url) as response:
            assert response.status == 200
    samples = await scrape_controller(mesh.controller)
    assert value(samples, "mycelium_controller_connected_proxies", role="sidecar") == 0


async def test_a_refused_discovery_stream_is_counted_by_reason(tmp_path: Path) -> None:
    anonymous = p.Hello(node=p.NodeInfo(id="a-0", namespace="shop", service_account="reviews"))
    home = tmp_path / "home"
    async with running_controller(home, allow_anonymous_proxies=False) as controller:
        assert isinstance(await hello_answer(controller, anonymous), p.Refusal)
        samples = await scrape_controller(controller)
    refused = "mycelium_controller_discovery_streams_refused_total"
    assert value(samples, refused, reason="unauthenticated") == 1
    assert value(samples, "mycelium_controller_connected_proxies", role="sidecar") == 0
