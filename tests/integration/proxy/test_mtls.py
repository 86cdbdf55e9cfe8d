"""mTLS between sidecars, end to end over real sockets: a caller with an SVID reaches a
STRICT workload through mTLS and is known there by its SPIFFE ID, which authorization
judges; a caller whose identity the policy does not name gets 403; a plaintext caller
is refused by the STRICT port and its request never reaches the app."""

from __future__ import annotations

from tests.support.apps import EchoApp
from tests.support.h2_apps import H2Client, H2EchoApp
from tests.support.polling import eventually
from tests.support.proxy_mesh import RATINGS, ProxyMesh, serving_sidecar, sidecar

from mycelium.proxy.listeners.server import ProxyServer

SECURE = """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewers}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
"""


async def get(mesh: ProxyMesh, caller: ProxyServer, path: str) -> tuple[int, str, str]:
    url = f"http://127.0.0.1:{caller.bound['outbound'].port}{path}"
    async with mesh.session.get(url, headers={"Host": "ratings"}) as response:
        return response.status, response.headers.get("x-mycelium-reason", ""), await response.text()


async def test_sidecars_speak_mtls_and_authorize_by_spiffe_id(proxy_mesh: ProxyMesh) -> None:
    app = await EchoApp("ratings", "127.0.0.1").start()
    try:
        await proxy_mesh.apply(RATINGS.format(port=app.port) + SECURE)
        async with (
            serving_sidecar(proxy_mesh, "ratings-0", "127.0.0.21") as server,
            sidecar(proxy_mesh, "productpage-1", service_account="productpage") as caller,
            sidecar(proxy_mesh, "stranger-0", service_account="stranger") as stranger,
        ):
            await eventually(
                lambda: (
                    server.core.active.authorizer.active
                    and 9080 in server.core.active.inbound_ports
                ),
                what="the server's policies",
            )

            status, _, _ = await eventually(
                lambda: _ok(get(proxy_mesh, caller, "/stars")), what="a request through mTLS"
            )
            assert status == 200
            assert server.core.counters["mtls_connections"] >= 1
            assert server.core.counters["authz_allowed"] >= 1
            # the app learns who called, as the serving sidecar verified it
            assert app.seen[-1]["headers"]["x-forwarded-client-cert"] == (
                "By=spiffe://cluster.local/ns/default/sa/ratings;"
                "URI=spiffe://cluster.local/ns/default/sa/productpage"
            )

            status, reason, body = await get(proxy_mesh, stranger, "/secret")
            assert (status, reason) == (403, "denied")
            assert "spiffe://cluster.local/ns/default/sa/stranger" in body

            # The plain caller has no SVID: the STRICT port refuses it.
            status, _, _ = await get(proxy_mesh, proxy_mesh.caller, "/plain")
            assert status >= 500
            assert server.core.counters["mtls_refused_plaintext"] >= 1
            assert [r["path"] for r in app.seen] == ["/stars"]
    finally:
        await app.stop()


async def _ok(pending: object) -> tuple[int, str, str] | None:
    result = await pending  # type: ignore[misc]
    return result if result[0] == 200 else None


async def test_http2_between_sidecars_is_mtls_too(proxy_mesh: ProxyMesh) -> None:
    app = await H2EchoApp("ratings-h2", "127.0.0.1").start()
    try:
        service = RATINGS.format(port=app.port).replace(
            "ports: [{name: http, port: 9080", "ports: [{name: h2, port: 9080, protocol: HTTP2"
        )
        await proxy_mesh.apply(service + SECURE)
        async with (
            serving_sidecar(proxy_mesh, "ratings-h2-0", "127.0.0.22") as server,
            sidecar(proxy_mesh, "productpage-h2", service_account="productpage") as caller,
        ):
            await eventually(
                lambda: (
                    server.core.active.authorizer.active
                    and 9080 in server.core.active.inbound_ports
                ),
                what="the server's policies",
            )
            client = await H2Client.connect("127.0.0.1", caller.bound["outbound"].port)
            try:

                async def answered() -> bool:
                    response = await client.request("/stars", authority="ratings:9080")
                    return response.status == 200

                await eventually(answered, what="an HTTP/2 request through mTLS")
            finally:
                await client.close()
            assert server.core.counters["mtls_connections"] >= 1
            assert server.core.counters["authz_allowed"] >= 1
            assert [r["path"] for r in app.seen][-1] == "/stars"
    finally:
        await app.stop()


DISABLED = """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: ratings-plain}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: DISABLE}
"""


async def test_a_caller_speaks_plaintext_to_a_workload_whose_mtls_is_disabled(
    proxy_mesh: ProxyMesh,
) -> None:
    app = await EchoApp("ratings", "127.0.0.1").start()
    try:
        await proxy_mesh.apply(RATINGS.format(port=app.port) + DISABLED)
        async with (
            serving_sidecar(proxy_mesh, "ratings-plain-0", "127.0.0.23") as server,
            sidecar(proxy_mesh, "productpage-2", service_account="productpage") as caller,
        ):
            # Both hold certificates, yet the serving side would not end TLS: the caller
            # must not start it (it would reach the app's HTTP parser as garbage).
            status, _, _ = await eventually(
                lambda: _ok(get(proxy_mesh, caller, "/stars")), what="a plaintext request"
            )
            assert status == 200
            assert server.core.counters["mtls_connections"] == 0
    finally:
        await app.stop()
