"""Explicit-mode TCP: a local port for a TCP or opaque service relays bytes, not HTTP.

An echo service (client speaks first), a banner service (server speaks first, so the
proxy must not wait for the client), and a TCPRoute splitting one service 50/50 over
two others, all on loopback behind a sidecar configured only by the controller.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support.proxy_mesh import ProxyMesh, free_port_on

from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, LocalUpstream

SERVICES = """
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: tcp, port: 7000, targetPort: {port}, protocol: TCP}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: echo-0, labels: {{app: echo}}}}
spec: {{address: 127.0.0.21}}
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: banner}}
spec:
  selector: {{app: banner}}
  ports: [{{name: smtp, port: 2525, targetPort: {port}, opaque: true}}]
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: banner-a}}
spec:
  selector: {{app: banner-a}}
  ports: [{{name: smtp, port: 2525, targetPort: {port}, opaque: true}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: banner-a-0, labels: {{app: banner-a}}}}
spec: {{address: 127.0.0.22}}
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: banner-b}}
spec:
  selector: {{app: banner-b}}
  ports: [{{name: smtp, port: 2525, targetPort: {port}, opaque: true}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: banner-b-0, labels: {{app: banner-b}}}}
spec: {{address: 127.0.0.23}}
---
apiVersion: mycelium.io/v1
kind: TCPRoute
metadata: {{name: banner}}
spec:
  parentRefs: [{{name: banner, port: 2525}}]
  rules:
    - backendRefs: [{{name: banner-a, weight: 50}}, {{name: banner-b, weight: 50}}]
"""


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _banner(name: str):  # type: ignore[no-untyped-def]
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"220 {name} ready\r\n".encode())
        await writer.drain()
        line = await reader.readline()
        writer.write(b"250 " + line)
        await writer.drain()
        writer.close()

    return serve


@asynccontextmanager
async def tcp_servers(port: int) -> AsyncIterator[None]:
    servers = [
        await asyncio.start_server(_echo, "127.0.0.21", port),
        await asyncio.start_server(_banner("banner-a"), "127.0.0.22", port),
        await asyncio.start_server(_banner("banner-b"), "127.0.0.23", port),
    ]
    try:
        yield
    finally:
        for server in servers:
            server.close()


@asynccontextmanager
async def tcp_caller(mesh: ProxyMesh) -> AsyncIterator[ProxyServer]:
    port = free_port_on("127.0.0.21", "127.0.0.22", "127.0.0.23")
    async with tcp_servers(port):
        await mesh.apply(SERVICES.format(port=port))
        proxy = mesh.proxy(
            "tcp-caller",
            local_upstreams=[
                LocalUpstream(ListenAddress("127.0.0.1", 0), "echo", 7000),
                LocalUpstream(ListenAddress("127.0.0.1", 0), "banner", None),
            ],
        )
        await proxy.start()
        try:
            yield proxy
        finally:
            await proxy.stop()


async def _connect(
    proxy: ProxyServer, name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    address = proxy.bound[name]
    return await asyncio.open_connection(address.host, address.port)


async def test_a_tcp_service_port_relays_bytes_both_ways(proxy_mesh: ProxyMesh) -> None:
    async with tcp_caller(proxy_mesh) as proxy:
        reader, writer = await _connect(proxy, "local:echo")
        payload = b"not http at all\x00\xff" * 1000
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(10):
            echoed = await reader.read()
        writer.close()
        assert echoed == payload
        assert proxy.core.counters["tcp_connections"] == 1


async def test_a_server_speaks_first_service_greets_before_the_client_sends(
    proxy_mesh: ProxyMesh,
) -> None:
    async with tcp_caller(proxy_mesh) as proxy:
        reader, writer = await _connect(proxy, "local:banner")
        async with asyncio.timeout(5):  # far below any detection timeout's worth of waiting
            greeting = await reader.readline()
        assert greeting.startswith(b"220 banner-")
        writer.write(b"HELO me\r\n")
        async with asyncio.timeout(5):
            assert await reader.readline() == b"250 HELO me\r\n"
        writer.close()


async def test_a_tcp_route_splits_connections_by_weight(proxy_mesh: ProxyMesh) -> None:
    async with tcp_caller(proxy_mesh) as proxy:
        served: Counter[str] = Counter()
        for _ in range(100):
            reader, writer = await _connect(proxy, "local:banner")
            async with asyncio.timeout(5):
                greeting = await reader.readline()
            served[greeting.split()[1].decode()] += 1
            writer.close()
        # 50/50 over 100 connections: 30..70 each is about six standard deviations wide
        assert set(served) == {"banner-a", "banner-b"}
        assert 30 <= served["banner-a"] <= 70, served
