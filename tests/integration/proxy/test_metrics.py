"""Istio's standard metrics, scraped from real sidecars on 15020 (an ephemeral port
here) after real traffic, and parsed with prometheus_client's own parser: the caller's
sidecar reports as source, the server's as destination, each with the full label set;
a refused request carries its response flag; a TCP service counts its bytes."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import grpc
from tests.support.apps import EchoApp
from tests.support.h2_apps import DETAILS_GRPC, GRPC_METHOD, GrpcEchoServer
from tests.support.metrics_scrape import scrape
from tests.support.polling import eventually
from tests.support.proxy_mesh import RATINGS, ProxyMesh, free_port_on, serving_sidecar, sidecar

from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid, client_context
from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, LocalUpstream
from mycelium.telemetry.workload_labels import WORKLOAD_NAME_LABEL

STRICT = """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
"""
CALLER = "spiffe://cluster.local/ns/default/sa/productpage"
SERVER = "spiffe://cluster.local/ns/default/sa/ratings"
LEDGER = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: ledger}}
spec:
  selector: {{app: ledger}}
  ports: [{{name: ledger, port: 7400, targetPort: {port}, opaque: true}}]
"""


def one(samples: dict[str, list[Any]], name: str, **labels: str) -> Any:
    found = [s for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


async def get(mesh: ProxyMesh, caller: ProxyServer, path: str) -> int:
    url = f"http://127.0.0.1:{caller.bound['outbound'].port}{path}"
    async with mesh.session.get(url, headers={"Host": "ratings"}) as response:
        await response.read()
        return response.status


async def test_both_ends_report_requests_with_istio_labels(proxy_mesh: ProxyMesh) -> None:
    app = await EchoApp("ratings", "127.0.0.1").start()
    try:
        await proxy_mesh.apply(RATINGS.format(port=app.port) + STRICT)
        async with (
            # the pod ratings-v1-0 of the Deployment ratings-v1, as the node agent runs it
            serving_sidecar(
                proxy_mesh,
                "ratings-v1-0",
                "127.0.0.21",
                labels={"version": "v1", WORKLOAD_NAME_LABEL: "ratings-v1"},
            ) as server,
            sidecar(
                proxy_mesh,
                "productpage-v1",
                service_account="productpage",
                workload="productpage-v1",
                labels={"app": "productpage", "version": "v1"},
            ) as caller,
        ):
            await eventually(
                lambda: 9080 in server.core.active.inbound_ports, what="the server's port"
            )
            await eventually(lambda: _is_ok(get(proxy_mesh, caller, "/first")), what="a request")
            for _ in range(4):
                assert await get(proxy_mesh, caller, "/more") == 200

            out = await scrape(caller)
            source = one(out, "istio_requests_total", reporter="source", response_code="200")
            # Istio's label set, exactly
            assert source.labels == {
                "reporter": "source",
                "source_workload": "productpage-v1",
                "source_canonical_service": "productpage",
                "source_canonical_revision": "v1",
                "source_workload_namespace": "default",
                "source_principal": CALLER,
                "source_app": "productpage",
                "source_version": "v1",
                "source_cluster": "Kubernetes",
                "destination_workload": "ratings-v1",  # the Deployment, not the pod
                "destination_workload_namespace": "default",
                "destination_principal": SERVER,
                "destination_app": "ratings",
                "destination_version": "v1",
                "destination_service": "ratings.default.svc.cluster.local",
                "destination_canonical_service": "ratings",
                "destination_canonical_revision": "v1",
                "destination_service_name": "ratings",
                "destination_service_namespace": "default",
                "destination_cluster": "Kubernetes",
                "request_protocol": "http",
                "response_code": "200",
                "grpc_response_status": "",
                "response_flags": "-",
                # Istio's caller side never claims it; the served side does, below
                "connection_security_policy": "unknown",
            }
            assert source.value >= 5

            inbound = await scrape(server, "/metrics")
            dest = one(inbound, "istio_requests_total", reporter="destination")
            # the server's own workload; the caller's, from its introduction
            assert dest.labels == {
                **source.labels,
                "reporter": "destination",
                "connection_security_policy": "mutual_tls",
            }
            assert dest.value >= 5
            histogram = one(
                inbound,
                "istio_request_duration_milliseconds_count",
                reporter="destination",
            )
            assert histogram.value == dest.value
            infinite = one(inbound, "istio_request_duration_milliseconds_bucket", le="+Inf")
            assert infinite.value == dest.value
            sizes = one(inbound, "istio_response_bytes_sum", reporter="destination")
            assert sizes.value > 0

            # the proxy's own
            info = one(out, "mycelium_proxy_config_info")
            assert info.labels["version"] == caller.core.active.version
            assert one(out, "mycelium_proxy_config_accepted_total").value >= 1
            assert one(out, "mycelium_proxy_certificate_expiry_seconds").value > 3600
    finally:
        await app.stop()


async def test_a_refused_request_carries_its_response_flag(proxy_mesh: ProxyMesh) -> None:
    # reviews' workloads are registered without a proxy, and nothing listens on
    # 127.0.0.11/12 at this port once the apps are gone: connect failures (UF)
    await proxy_mesh.apply("")
    await proxy_mesh.v1.stop()
    await proxy_mesh.v2.stop()
    response = await proxy_mesh.get("/down")
    assert response.status == 503
    samples = await scrape(proxy_mesh.caller)
    refused = one(samples, "istio_requests_total", response_code="503")
    assert refused.labels["response_flags"] == "UF"
    assert refused.labels["reporter"] == "source"
    assert refused.labels["destination_service"] == "reviews.default.svc.cluster.local"
    assert (
        refused.labels["connection_security_policy"] == "unknown"
    )  # the caller's side never claims it


async def test_tcp_services_count_connections_and_bytes(proxy_mesh: ProxyMesh) -> None:
    received: list[bytes] = []

    async def ledger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        received.append(data)
        writer.write(b"got " + data)
        await writer.drain()
        writer.close()

    port = free_port_on("127.0.0.1")
    app = await asyncio.start_server(ledger, "127.0.0.1", port)
    try:
        await proxy_mesh.apply(LEDGER.format(port=port) + STRICT)
        local = free_port_on("127.0.0.1")
        async with (
            serving_sidecar(proxy_mesh, "ledger-0", "127.0.0.31", app="ledger") as server,
            sidecar(
                proxy_mesh,
                "teller-0",
                service_account="teller",
                workload="teller-0",
                local_upstreams=[LocalUpstream(ListenAddress("127.0.0.1", local), "ledger")],
            ) as caller,
        ):
            await eventually(
                lambda: 7400 in server.core.active.inbound_ports, what="the ledger's port"
            )

            async def exchange() -> bytes:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", local)
                    writer.write(b"twelve bytes")
                    writer.write_eof()
                    answer = await reader.read()
                    writer.close()
                except OSError:
                    return b""  # not configured yet
                return answer

            assert await eventually(exchange, what="a relayed connection") == b"got twelve bytes"
            await eventually(
                lambda: _has(caller, "istio_tcp_connections_closed_total"),
                what="the caller's TCP metrics",
            )
            out = await scrape(caller)
            sent = one(out, "istio_tcp_received_bytes_total", reporter="source", response_flags="-")
            assert sent.value == 12
            assert sent.labels["destination_workload"] == "ledger-0"
            assert sent.labels["destination_principal"].endswith("/sa/ledger")
            assert sent.labels["request_protocol"] == "tcp"
            assert sent.labels["connection_security_policy"] == "unknown"  # the caller's side
            flowed = {"reporter": "source", "response_flags": "-"}
            assert one(out, "istio_tcp_sent_bytes_total", **flowed).value == 16
            assert one(out, "istio_tcp_connections_opened_total", **flowed).value == 1

            await eventually(
                lambda: _has(server, "istio_tcp_connections_closed_total"),
                what="the server's TCP metrics",
            )
            inbound = await scrape(server)
            got = one(
                inbound,
                "istio_tcp_received_bytes_total",
                reporter="destination",
                response_flags="-",
            )
            assert got.value == 12
            assert got.labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/teller"
            assert got.labels["source_workload_namespace"] == "default"
            # the caller introduced itself inside the mTLS, before the client's bytes
            # (which reached the app unchanged: "got twelve bytes" above)
            assert got.labels["source_workload"] == "teller-0"
            assert got.labels["connection_security_policy"] == "mutual_tls"
            assert got.labels["destination_workload"] == "ledger-0"

            # A connection that stays open is counted as opened while it lasts.
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"still talking")
            await writer.drain()

            async def opened_twice() -> bool:
                samples = (await scrape(caller))["istio_tcp_connections_opened_total"]
                return sum(sample.value for sample in samples) == 2

            await eventually(opened_twice, what="the open connection counted")
            closed = (await scrape(caller))["istio_tcp_connections_closed_total"]
            assert sum(sample.value for sample in closed) == 1  # ...and not yet closed
            writer.write_eof()
            await reader.read()
            writer.close()
    finally:
        app.close()


async def _is_ok(call: Any) -> bool:
    return await call == 200


async def _has(server: ProxyServer, name: str) -> bool:
    return bool((await scrape(server)).get(name))


async def test_a_grpc_callers_introduction_names_it_at_the_served_side(
    proxy_mesh: ProxyMesh,
) -> None:
    """HTTP/2 between two sidecars over mTLS: the caller introduces itself on its
    requests, so the server's destination-side series name the calling workload (not
    `unknown`), and the app never sees the introduction."""
    port = free_port_on("127.0.0.1", "127.0.0.23")
    server = GrpcEchoServer("127.0.0.1", port).start()
    try:
        await proxy_mesh.apply(DETAILS_GRPC.format(port=port) + STRICT)
        async with (
            serving_sidecar(
                proxy_mesh,
                "details-v1-0",
                "127.0.0.23",
                app="details",
                labels={"version": "v1", WORKLOAD_NAME_LABEL: "details-v1"},
            ) as details,
            sidecar(
                proxy_mesh,
                "productpage-v1-0",
                service_account="productpage",
                workload="productpage-v1-0",
                labels={
                    "app": "productpage",
                    "version": "v1",
                    WORKLOAD_NAME_LABEL: "productpage-v1",
                },
            ) as caller,
        ):
            await eventually(
                lambda: 9090 in details.core.active.inbound_ports, what="the server's port"
            )
            outbound = caller.bound["outbound"]

            def say() -> bytes:
                options = [
                    ("grpc.default_authority", "details:9090"),
                    ("grpc.enable_http_proxy", 0),
                ]
                with grpc.insecure_channel(
                    f"{outbound.host}:{outbound.port}", options=options
                ) as c:
                    return bytes(c.unary_unary(GRPC_METHOD)(b"books", timeout=10))

            assert await asyncio.to_thread(say) == b"hello books"
            served = await scrape(details)
    finally:
        server.stop()
    total = one(served, "istio_requests_total", reporter="destination", request_protocol="grpc")
    assert total.labels["source_workload"] == "productpage-v1"
    assert total.labels["source_app"] == "productpage"
    assert total.labels["connection_security_policy"] == "mutual_tls"
    assert total.labels["grpc_response_status"] == "0"
    assert one(served, "istio_request_messages_total", reporter="destination").value == 1
    [metadata] = server.calls
    assert "x-mycelium-peer" not in metadata


async def test_an_oversized_introduction_is_refused_and_counted(proxy_mesh: ProxyMesh) -> None:
    """A client with a valid SVID announcing an introduction of 60,000 bytes on an
    opaque STRICT port is cut off before the bytes are held, and counted."""
    port = free_port_on("127.0.0.1", "127.0.0.32")
    await proxy_mesh.apply(LEDGER.format(port=port) + STRICT)
    async with serving_sidecar(proxy_mesh, "ledger-0", "127.0.0.32", app="ledger") as server:
        await eventually(lambda: f"inbound:{port}" in server.bound, what="the ledger's port")
        request = new_key_and_request(SpiffeId("cluster.local", "default", "mallory"))
        ca = proxy_mesh.controller.ca
        mallory = SpiffeId("cluster.local", "default", "mallory")
        svid = Svid(ca.issue_svid(request.csr_pem, mallory), request.key_pem(), ca.bundle_pem)
        reader, writer = await asyncio.open_connection(
            "127.0.0.32", port, ssl=client_context(svid, introduces=True), server_hostname=None
        )
        writer.write((60_000).to_bytes(2, "big") + b"x" * 100)
        await writer.drain()
        try:
            answer = await reader.read()
        except (ConnectionResetError, ssl.SSLError):  # aborted: a reset
            answer = b""
        assert answer == b""  # cut off, nothing relayed
        writer.close()
    assert server.core.counters["refused_bad_introduction"] == 1
