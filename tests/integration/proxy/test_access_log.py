"""The access log: a JSON line per request, HTTP/1.1 and HTTP/2 alike, that says where
the request went and, when the proxy answered itself, why (the same reason as the
response's `x-mycelium-reason`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from tests.integration.proxy.test_tcp_services import SERVICES, tcp_servers
from tests.support.h2_apps import H2Client, H2Mesh, h2_mesh
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, free_port_on

from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, LocalUpstream

__all__ = ["h2_mesh"]

ONLY_API = """---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews, subset: v1}]
  - matches: [{path: {type: PathPrefix, value: /admin}}]
    backendRefs: [{name: reviews, subset: v1}]
    fault: {abort: {httpStatus: 503, percentage: 100}}
"""


@asynccontextmanager
async def logging_proxy(
    mesh: ProxyMesh, log: Path, **settings: object
) -> AsyncIterator[ProxyServer]:
    proxy = mesh.proxy("logged-0", access_log=str(log), subscriptions=["reviews"], **settings)
    await proxy.start()
    try:
        # the route was applied first: the proxy's first config holds it
        await eventually(lambda: proxy.core.active.routes, what="the proxy's first config")
        yield proxy
    finally:
        await proxy.stop()


def records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


async def test_http1_requests_are_logged_with_their_route_and_reason(
    proxy_mesh: ProxyMesh, tmp_path: Path
) -> None:
    await proxy_mesh.apply(ONLY_API)
    log = tmp_path / "access.log"
    async with logging_proxy(proxy_mesh, log) as proxy:
        outbound = f"http://127.0.0.1:{proxy.bound['outbound'].port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{outbound}/api/books", headers={"Host": "reviews"}, data=b"x" * 300
            ) as ok:
                assert ok.status == 200
            async with session.get(f"{outbound}/admin", headers={"Host": "reviews"}) as refused:
                assert refused.status == 503
                assert refused.headers["x-mycelium-reason"] == "fault_injected"
        # written out by the once-a-second sweep, not per request
        logged = await eventually(lambda: len(records(log)) >= 2 and records(log))

    served, missed = logged
    assert served["protocol"] == "HTTP/1.1"
    assert served["path"] == "/api/books"
    assert served["status"] == 200
    assert served["reason"] is None
    assert served["service"] == "reviews.default"
    assert served["upstream_host"].startswith("127.0.0.11:")
    assert served["response_flags"] == "-"
    assert served["bytes_received"] == 300
    assert served["bytes_sent"] > 0
    assert 0 <= served["response_duration_ms"] <= served["duration_ms"]
    assert missed["path"] == "/admin"
    assert missed["status"] == 503
    assert missed["reason"] == "fault_injected"
    assert missed["response_flags"] == "FI"
    assert missed["response_duration_ms"] is None
    assert missed["rule"] != served["rule"]
    assert missed["upstream_host"] is None


async def leave_early(port: int, path: str, *, after_head: bool) -> None:
    """Ask for `path` over HTTP/1.1 and close the connection: before any answer, or
    right after the response head (without reading the body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: reviews\r\n\r\n".encode())
    if after_head:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
    else:
        await asyncio.sleep(0.2)  # the request is with the app, which takes its time
    writer.close()


async def test_an_http1_client_that_leaves_is_a_dc_not_a_proxy_error(
    proxy_mesh: ProxyMesh, tmp_path: Path
) -> None:
    await proxy_mesh.apply(ONLY_API)
    log = tmp_path / "access.log"
    async with logging_proxy(proxy_mesh, log) as proxy:
        port = proxy.bound["outbound"].port
        await leave_early(port, "/api/slow?delay=1", after_head=False)
        # a body far larger than the socket buffers: still flowing when the client leaves
        await leave_early(port, "/api/large?size=64000000", after_head=True)
        logged = await eventually(lambda: len(records(log)) >= 2 and records(log), timeout=10)
        assert proxy.core.counters["reason_internal_error"] == 0
        # the attempts were given up, not left holding the cluster's limits
        for cluster in proxy.core.clusters:
            assert cluster.breaker.requests == 0
            assert all(endpoint.in_flight == 0 for endpoint in cluster.endpoints)

    by_path = {record["path"].split("?")[0]: record for record in logged}
    waiting, reading = by_path["/api/slow"], by_path["/api/large"]
    assert (waiting["status"], waiting["reason"], waiting["response_flags"]) == (
        0,
        "client_reset",
        "DC",
    )
    assert (reading["status"], reading["reason"], reading["response_flags"]) == (
        200,
        "client_reset",
        "DC",
    )
    assert reading["bytes_sent"] < 64_000_000


async def test_http2_streams_are_logged_like_http1_requests(
    h2_mesh: H2Mesh, tmp_path: Path
) -> None:
    await h2_mesh.apply(ONLY_API)
    log = tmp_path / "access.log"
    async with logging_proxy(h2_mesh.mesh, log) as proxy:
        client = await H2Client.connect("127.0.0.1", proxy.bound["outbound"].port)
        try:
            ok = await client.request("/api/books")
            missed = await client.request("/admin")
        finally:
            await client.close()
        assert ok.status == 200
        assert missed.status == 503
        assert missed.headers["x-mycelium-reason"] == "fault_injected"
        logged = await eventually(lambda: len(records(log)) >= 2 and records(log))

    served, refused = sorted(logged, key=lambda r: r["path"], reverse=True)
    assert served["protocol"] == refused["protocol"] == "HTTP/2"
    assert served["path"] == "/api/books"
    assert served["status"] == 200
    assert served["upstream_host"].startswith("127.0.0.11:")
    assert served["bytes_sent"] > 0
    assert refused["path"] == "/admin"
    assert refused["reason"] == "fault_injected"


async def test_a_relayed_tcp_connection_is_logged_with_its_bytes_and_end(
    proxy_mesh: ProxyMesh, tmp_path: Path
) -> None:
    port = free_port_on("127.0.0.21", "127.0.0.22", "127.0.0.23")
    log = tmp_path / "access.log"
    async with tcp_servers(port):
        await proxy_mesh.apply(SERVICES.format(port=port))
        local = LocalUpstream(ListenAddress("127.0.0.1", 0), "echo", 7000)
        async with logging_proxy(proxy_mesh, log, local_upstreams=[local]) as proxy:
            address = proxy.bound["local:echo"]
            reader, writer = await asyncio.open_connection(address.host, address.port)
            writer.write(b"ping" * 100)
            writer.write_eof()
            async with asyncio.timeout(10):
                assert len(await reader.read()) == 400
            writer.close()
            (line,) = await eventually(lambda: records(log), what="the connection's line")

    assert line["protocol"] == "TCP"
    assert line["direction"] == "outbound"
    assert line["service"] == "echo.default"
    assert line["upstream_host"] == f"127.0.0.21:{port}"
    assert line["bytes_received"] == line["bytes_sent"] == 400
    assert line["ended_by"] == "completed"
    assert line["response_flags"] == "-"
    assert line["duration_ms"] >= 0
