"""WebSocket through the sidecar: the upgrade is routed like any request, the 101 turns
both connections into a byte pipe, closes travel both ways, and a declined upgrade
leaves the client's connection serving HTTP/1.1."""

from __future__ import annotations

import asyncio
import os

import aiohttp
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, free_port_on

HOST = {"Host": "reviews"}


def connect(mesh: ProxyMesh) -> aiohttp.client._WSRequestContextManager:
    return mesh.session.ws_connect(
        mesh.outbound + "/ws", headers=HOST, max_msg_size=0, autoping=True
    )


async def test_messages_echo_both_ways_through_the_upgrade(proxy_mesh: ProxyMesh) -> None:
    async with connect(proxy_mesh) as ws:
        for i in range(5):
            await ws.send_str(f"hello {i}")
            assert await ws.receive_str(timeout=5) == f"hello {i}"
            payload = bytes([i]) * (100 + i)
            await ws.send_bytes(payload)
            assert await ws.receive_bytes(timeout=5) == payload
    counters = proxy_mesh.caller.core.counters
    assert counters["upgraded_connections"] == 1
    await eventually(lambda: counters["upgraded_connections_closed"] == 1)


async def test_a_five_megabyte_message_crosses_whole(proxy_mesh: ProxyMesh) -> None:
    big = os.urandom(5 * 1024 * 1024)
    async with connect(proxy_mesh) as ws:
        await ws.send_bytes(big)
        assert await ws.receive_bytes(timeout=30) == big
        await ws.send_str("still here")
        assert await ws.receive_str(timeout=5) == "still here"


async def test_the_server_closing_reaches_the_client(proxy_mesh: ProxyMesh) -> None:
    async with connect(proxy_mesh) as ws:
        await ws.send_str("close-please")
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4000
    await eventually(lambda: proxy_mesh.caller.core.counters["upgraded_connections_closed"] == 1)


async def test_the_client_closing_reaches_the_server(proxy_mesh: ProxyMesh) -> None:
    ws = await connect(proxy_mesh)
    await ws.send_str("ping")
    assert await ws.receive_str(timeout=5) == "ping"
    await ws.close()
    await eventually(lambda: proxy_mesh.v1.ws_closed + proxy_mesh.v2.ws_closed == 1)
    await eventually(lambda: proxy_mesh.caller.core.counters["upgraded_connections_closed"] == 1)


async def test_other_connections_are_served_while_a_socket_is_open(
    proxy_mesh: ProxyMesh,
) -> None:
    async with connect(proxy_mesh) as ws:
        await ws.send_str("first")
        assert await ws.receive_str(timeout=5) == "first"
        responses = await asyncio.gather(*(proxy_mesh.get("/plain") for _ in range(5)))
        assert [r.status for r in responses] == [200] * 5
        await ws.send_str("after")
        assert await ws.receive_str(timeout=5) == "after"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_a_declined_upgrade_is_answered_and_the_connection_stays_http(
    proxy_mesh: ProxyMesh,
) -> None:
    addr = proxy_mesh.caller.bound["outbound"]
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    try:
        upgrade = (
            b"GET /ws?decline=1 HTTP/1.1\r\nHost: reviews\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        # The next request follows at once: it must wait for the answer, then be HTTP.
        writer.write(upgrade + b"GET /after HTTP/1.1\r\nHost: reviews\r\n\r\n")
        status, _, body = await asyncio.wait_for(_read_response(reader), 10)
        assert status == 400
        assert body == b"no upgrade here\n"
        status, _, body = await asyncio.wait_for(_read_response(reader), 10)
        assert status == 200
        assert b'"/after"' in body
        writer.write(b"GET /again HTTP/1.1\r\nHost: reviews\r\n\r\n")
        status, _, body = await asyncio.wait_for(_read_response(reader), 10)
        assert status == 200
        assert b'"/again"' in body
    finally:
        writer.close()
    assert proxy_mesh.caller.core.counters["upgraded_connections"] == 0


SWITCHY = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: switchy}}
spec:
  selector: {{app: switchy}}
  ports: [{{name: http, port: 8080, targetPort: {port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: switchy-0, labels: {{app: switchy}}}}
spec: {{address: 127.0.0.13}}
"""


async def test_a_switch_nobody_asked_for_is_the_upstreams_protocol_error(
    proxy_mesh: ProxyMesh,
) -> None:
    async def switch_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Per connection: a proper answer first (so that it is pooled), then a 101."""
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nraw bytes")
        await writer.drain()
        await reader.read()  # until the proxy lets go
        writer.close()

    port = free_port_on("127.0.0.13")
    server = await asyncio.start_server(switch_second, "127.0.0.13", port)
    try:
        before = proxy_mesh.caller.core.active.version
        await proxy_mesh.apply(SWITCHY.format(port=port))
        await proxy_mesh.settle(before)
        statuses = []
        for _ in range(4):
            response = await proxy_mesh.get("/", host="switchy")
            statuses.append(response.status)
            if response.status == 502:
                assert response.headers["x-mycelium-reason"] == "upstream_protocol_error"
    finally:
        server.close()
    # The second request on each connection went the synchronous way (a pooled one).
    assert statuses == [200, 502, 200, 502]
    assert proxy_mesh.caller.core.requests_sync == 2
    assert proxy_mesh.caller.core.counters["upgraded_connections"] == 0


async def test_a_drain_ends_an_open_websocket_at_its_deadline(proxy_mesh: ProxyMesh) -> None:
    async with connect(proxy_mesh) as ws:
        await ws.send_str("still here")
        assert await ws.receive_str(timeout=5) == "still here"
        started = asyncio.get_running_loop().time()
        await proxy_mesh.caller.drain(0.5)
        message = await ws.receive(timeout=5)
        assert message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
        assert asyncio.get_running_loop().time() - started < 3
    assert not proxy_mesh.caller.core.relays
