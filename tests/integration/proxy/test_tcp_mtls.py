"""mTLS for TCP services between sidecars: an opaque port is reached through the
mesh's mTLS, judged by the caller's SPIFFE ID, and keeps TCP's half-close; a STRICT
port refuses plaintext; a PERMISSIVE port passes a non-mesh client's bytes, even its
own TLS, to the app untouched.

The app is a "ledger" that reads until the client half-closes, then answers with what it
got: only a relay that carries EOF through TLS and keeps the other direction open can
deliver that answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support.client_hello import client_hello
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, free_port_on

from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, LocalUpstream

LEDGER_ADDRESS = "127.0.0.31"
SERVICE = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: ledger}}
spec:
  selector: {{app: ledger}}
  ports: [{{name: ledger, port: 7400, targetPort: {port}, opaque: true}}]
---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {{name: default}}
spec:
  mtls: {{mode: {mode}}}
---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {{name: ledger-tellers}}
spec:
  selector: {{matchLabels: {{app: ledger}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/default/sa/teller"]}}}}]
{more}"""
# Outside the mesh there is no identity to name: the PERMISSIVE test also lets in by address.
FROM_LOOPBACK = """  - from: [{source: {ipBlocks: ["127.0.0.1/32"]}}]
"""


class Ledger:
    """Reads a connection to its end, then answers `ledger got: <bytes>` and closes."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> Ledger:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        self.received.append(data)
        writer.write(b"ledger got: " + data)
        await writer.drain()
        writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def converse(host: str, port: int, message: bytes) -> bytes:
    """Send `message`, half-close, and read the answer to its end."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(message)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


@asynccontextmanager
async def ledger_mesh(
    mesh: ProxyMesh, mode: str, more: str = ""
) -> AsyncIterator[tuple[Ledger, ProxyServer]]:
    port = free_port_on("127.0.0.1", LEDGER_ADDRESS)
    ledger = await Ledger().start(port)
    await mesh.apply(SERVICE.format(port=port, mode=mode, more=more))
    token = mesh.controller.join_tokens.mint("default", "ledger", 600).token
    server = mesh.proxy(
        f"ledger-{mode.lower()}",
        workload="ledger-0",
        labels={"app": "ledger"},
        address=LEDGER_ADDRESS,
        inbound_address=LEDGER_ADDRESS,
        app_address="127.0.0.1",
        service_account="ledger",
        join_token=token,
    )
    await server.start()
    try:
        await eventually(
            lambda: (
                server.core.svid is not None
                and server.core.active.authorizer.active
                and f"inbound:{port}" in server.bound
            ),
            what="the ledger's sidecar with its certificate, policy and inbound port",
        )
        yield ledger, server
    finally:
        await server.stop()
        ledger.stop()


@asynccontextmanager
async def caller(mesh: ProxyMesh, account: str) -> AsyncIterator[tuple[str, int, ProxyServer]]:
    token = mesh.controller.join_tokens.mint("default", account, 600).token
    proxy = mesh.proxy(
        f"{account}-0",
        service_account=account,
        join_token=token,
        local_upstreams=[LocalUpstream(ListenAddress("127.0.0.1", 0), "ledger", 7400)],
    )
    await proxy.start()
    try:
        await eventually(lambda: proxy.core.svid is not None, what=f"{account}'s certificate")
        local = proxy.bound["local:ledger"]
        yield local.host, local.port, proxy
    finally:
        await proxy.stop()


async def _answered(host: str, port: int, message: bytes) -> bytes | None:
    answer = await converse(host, port, message)
    return answer or None


async def test_a_tcp_service_is_reached_through_mtls_and_judged_by_spiffe_id(
    proxy_mesh: ProxyMesh,
) -> None:
    async with (
        ledger_mesh(proxy_mesh, "STRICT") as (ledger, server),
        caller(proxy_mesh, "teller") as (host, port, teller),
        caller(proxy_mesh, "stranger") as (s_host, s_port, _),
    ):
        answer = await eventually(
            lambda: _answered(host, port, b"deposit 10"), what="the teller's answer"
        )
        assert answer == b"ledger got: deposit 10"  # EOF crossed TLS, the answer came back
        assert server.core.counters["mtls_connections"] >= 1
        assert teller.core.counters["mtls_upstream_connections"] >= 1

        # A valid certificate, but the policy does not name this identity.
        assert await converse(s_host, s_port, b"withdraw 1000") == b""
        assert server.core.counters["refused_denied"] >= 1

        # No certificate at all: the STRICT port does not let plaintext through.
        mesh_ledger = server.bound[next(k for k in server.bound if k.startswith("inbound:"))]
        assert await converse(mesh_ledger.host, mesh_ledger.port, b"withdraw 1") == b""
        assert server.core.counters["mtls_refused_plaintext"] >= 1

        assert ledger.received == [b"deposit 10"]


async def test_a_permissive_port_passes_plaintext_and_foreign_tls_untouched(
    proxy_mesh: ProxyMesh,
) -> None:
    async with (
        ledger_mesh(proxy_mesh, "PERMISSIVE", FROM_LOOPBACK) as (ledger, server),
        caller(proxy_mesh, "teller") as (host, port, _),
    ):
        inbound = server.bound[next(k for k in server.bound if k.startswith("inbound:"))]
        assert await converse(inbound.host, inbound.port, b"balance?") == b"ledger got: balance?"

        # An app's own TLS (no mesh ALPN) is not the mesh's to end: it reaches the app.
        hello = client_hello("postgresql")
        answer = await converse(inbound.host, inbound.port, hello)
        assert answer == b"ledger got: " + hello

        # And a sidecar's mTLS is still ended, so policy sees the teller.
        answer = await eventually(lambda: _answered(host, port, b"deposit 5"), what="mTLS")
        assert answer == b"ledger got: deposit 5"
        assert server.core.counters["mtls_connections"] >= 1
        assert ledger.received == [b"balance?", hello, b"deposit 5"]
