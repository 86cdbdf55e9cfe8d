"""Calls leaving the mesh, end to end on loopback: a namespace whose egress policy is
REGISTRY_ONLY refuses unknown destinations; with an egress gateway, its sidecars reach
an external Service only through the gateway's proxy (over mTLS, Host kept), which
alone connects to the outside; without it (ALLOW_ANY), the old direct behaviour stays."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.apps import EchoApp
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, free_port_on, sidecar

from mycelium.proxy.listeners.server import ProxyServer

GATEWAY_ADDRESS = "127.0.0.40"
OUTSIDE_ADDRESS = "127.0.0.50"

EXTERNAL = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: example-api}}
spec:
  external: true
  hosts: [api.example.com]
  ports: [{{name: http, port: 80, targetPort: {port}}}]
  endpoints: [{{address: {address}}}]
"""

EGRESS_GATEWAY = """---
apiVersion: mycelium.io/v1
kind: Gateway
metadata: {{name: egress}}
spec:
  selector: {{app: egress-gateway}}
  listeners: [{{name: http, port: {port}, protocol: HTTP, hostname: "*.example.com"}}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: example-api}}
spec:
  parentRefs: [{{kind: Gateway, name: egress}}]
  hostnames: [api.example.com]
  rules: [{{backendRefs: [{{name: example-api}}]}}]
"""


def namespace(egress: str) -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: Namespace
metadata: {{name: default}}
spec:
  egress: {egress}
"""


ONLY_CART_LEAVES = """---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: who-leaves}
spec:
  selector: {matchLabels: {app: egress-gateway}}
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/cart"]}}]
"""


@dataclass
class Egress:
    mesh: ProxyMesh
    outside: EchoApp
    gateway_port: int
    tmp: Path

    def resources(self, egress: str) -> str:
        return (
            EXTERNAL.format(port=self.outside.port, address=OUTSIDE_ADDRESS)
            + EGRESS_GATEWAY.format(port=self.gateway_port)
            + namespace(egress)
        )

    async def configure(self, proxy: ProxyServer, *texts: str) -> None:
        before = proxy.core.active.version
        await self.mesh.apply("".join(texts))
        await eventually(lambda: proxy.core.active.version != before, what="a push")

    async def call(self, caller: ProxyServer, host: str) -> tuple[int, dict[str, str], bytes]:
        address = caller.bound["outbound"]
        url = f"http://{address.host}:{address.port}/v1/prices?book=7"
        async with self.mesh.session.get(url, headers={"Host": host}) as response:
            return response.status, dict(response.headers), await response.read()


def logged(proxy: ProxyServer, log: Path) -> list[dict[str, Any]]:
    assert proxy.core.access_log is not None
    proxy.core.access_log.flush()
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
async def egress(proxy_mesh: ProxyMesh, tmp_path: Path) -> AsyncIterator[Egress]:
    outside = await EchoApp("outside", OUTSIDE_ADDRESS).start()
    try:
        yield Egress(proxy_mesh, outside, free_port_on(GATEWAY_ADDRESS), tmp_path)
    finally:
        await outside.stop()


def gateway_proxy(egress: Egress) -> Any:
    return sidecar(
        egress.mesh,
        "egress-0",
        role="gateway",
        workload="egress-0",
        labels={"app": "egress-gateway"},
        address=GATEWAY_ADDRESS,
        gateway_address=GATEWAY_ADDRESS,
        service_account="egress",
        outbound=None,
        access_log=str(egress.tmp / "gateway.log"),
    )


def caller(egress: Egress, name: str = "cart") -> Any:
    return sidecar(
        egress.mesh, f"{name}-0", service_account=name, access_log=str(egress.tmp / f"{name}.log")
    )


async def test_registry_only_refuses_an_unknown_host_with_egress_denied(egress: Egress) -> None:
    async with caller(egress) as cart:
        await egress.configure(cart, egress.resources("{policy: REGISTRY_ONLY}"))
        status, headers, body = await egress.call(cart, "nowhere.example.org")
        assert (status, headers["x-mycelium-reason"]) == (502, "egress_denied")
        assert b"nowhere.example.org is not a Service in the registry" in body
        assert b"egress policy REGISTRY_ONLY" in body
        assert cart.core.counters["reason_egress_denied"] == 1
        # Services of the registry stay reachable.
        status, _, _ = await egress.call(cart, "reviews")
        assert status == 200


async def test_an_external_service_is_reached_only_through_the_egress_gateway(
    egress: Egress,
) -> None:
    async with gateway_proxy(egress) as gateway, caller(egress) as cart:
        await egress.configure(
            cart, egress.resources("{policy: REGISTRY_ONLY, gateway: egress}"), ONLY_CART_LEAVES
        )
        await eventually(
            lambda: f"gateway:{egress.gateway_port}" in gateway.bound, what="the listener"
        )
        status, _, body = await egress.call(cart, "api.example.com")
        assert status == 200, body
        [seen] = egress.outside.seen
        assert seen["path"] == "/v1/prices?book=7"
        assert seen["headers"]["host"] == "api.example.com"  # kept all the way

        # The caller sent it to the gateway, over mTLS; the gateway to the outside.
        [sent] = await eventually(lambda: logged(cart, egress.tmp / "cart.log"), what="a log")
        assert sent["upstream_cluster"] == "egress~egress.default"
        assert sent["upstream_host"].startswith(f"{GATEWAY_ADDRESS}:")
        assert cart.core.counters.get("tcp_passthrough", 0) == 0
        [passed] = await eventually(
            lambda: logged(gateway, egress.tmp / "gateway.log"), what="a log"
        )
        assert passed["direction"] == "gateway"
        assert passed["upstream_cluster"] == "example-api.default"
        assert passed["upstream_host"] == f"{OUTSIDE_ADDRESS}:{egress.outside.port}"

        # The gateway's AuthorizationPolicy says who may leave: cart, not reviews.
        async with caller(egress, "reviews") as other:
            await eventually(lambda: other.core.svid is not None, what="an SVID")
            status, headers, _ = await egress.call(other, "api.example.com")
            assert (status, headers["x-mycelium-reason"]) == (403, "denied")
        assert len(egress.outside.seen) == 1

    # Without its gateway, the call does not go around it.
    async with caller(egress, "cart2") as cart2:
        status, headers, _ = await egress.call(cart2, "api.example.com")
        assert (status, headers["x-mycelium-reason"]) == (503, "no_healthy_upstream")
        assert len(egress.outside.seen) == 1


async def test_without_an_egress_gateway_allow_any_calls_directly(egress: Egress) -> None:
    async with caller(egress) as cart:
        await egress.mesh.apply(egress.resources("{}"))  # as it was: nothing to push
        status, _, body = await egress.call(cart, "api.example.com")
        assert status == 200, body
        [sent] = await eventually(lambda: logged(cart, egress.tmp / "cart.log"), what="a log")
        assert sent["upstream_cluster"] == "example-api.default"
        assert sent["upstream_host"] == f"{OUTSIDE_ADDRESS}:{egress.outside.port}"
        # An unknown host is still what it was: unknown_service, not egress_denied.
        status, headers, _ = await egress.call(cart, "nowhere.example.org")
        assert (status, headers["x-mycelium-reason"]) == (503, "unknown_service")
