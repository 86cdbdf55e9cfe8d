"""Trailers over HTTP/1.1 through the caller's sidecar, on real sockets: the fields
RFC 9110 section 6.5.1 keeps out of trailers (framing, routing, authentication,
cookies, response control, hop-by-hop) are dropped in both directions and counted,
and the rest pass. (HTTP/2's side of this is in test_h2_streams.py.)"""

from __future__ import annotations

import asyncio

from tests.support.proxy_mesh import ProxyMesh, free_port_on

LEDGER = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: ledger}}
spec:
  selector: {{app: ledger}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: ledger-0, labels: {{app: ledger}}}}
spec: {{address: 127.0.0.31}}
"""

REQUEST = (
    b"POST /entries HTTP/1.1\r\n"
    b"Host: ledger:9080\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5\r\nhello\r\n"
    b"0\r\n"
    b"X-Checksum: 1234\r\n"
    b"Authorization: Bearer after-the-check\r\n"
    b"Content-Length: 99\r\n"
    b"Host: payments:9080\r\n"
    b"Cookie: session=theirs\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"2\r\nok\r\n"
    b"0\r\n"
    b"X-Digest: abcd\r\n"
    b"Set-Cookie: admin=1\r\n"
    b"Location: /elsewhere\r\n"
    b"Connection: close\r\n"
    b"\r\n"
)


async def _until_last_chunk_ends(reader: asyncio.StreamReader) -> bytes:
    """A chunked message's bytes up to the blank line after its last chunk's trailers."""
    data = await reader.readuntil(b"\r\n0\r\n")
    while not data.endswith(b"\r\n\r\n"):
        data += await reader.readuntil(b"\r\n")
    return data


async def test_forbidden_trailer_fields_are_dropped_both_ways(proxy_mesh: ProxyMesh) -> None:
    received: list[bytes] = []

    async def ledger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _until_last_chunk_ends(reader))
        writer.write(RESPONSE)
        await writer.drain()
        writer.close()

    port = free_port_on("127.0.0.31")
    app = await asyncio.start_server(ledger, "127.0.0.31", port)
    try:
        await proxy_mesh.apply(LEDGER.format(port=port))
        outbound = proxy_mesh.caller.bound["outbound"]
        reader, writer = await asyncio.open_connection(outbound.host, outbound.port)
        try:
            writer.write(REQUEST)
            response = await asyncio.wait_for(_until_last_chunk_ends(reader), 10)
        finally:
            writer.close()
    finally:
        app.close()

    [upstream_saw] = received
    head, _, trailers = upstream_saw.lower().rpartition(b"\r\n0\r\n")
    assert b"x-checksum: 1234" in trailers
    for forbidden in (b"authorization", b"content-length", b"payments", b"cookie"):
        assert forbidden not in trailers, upstream_saw
    assert b"hello" in head

    status, _, client_trailers = response.lower().rpartition(b"\r\n0\r\n")
    assert status.startswith(b"http/1.1 200")
    assert b"x-digest: abcd" in client_trailers
    for forbidden in (b"set-cookie", b"location", b"connection"):
        assert forbidden not in client_trailers, response
    # 4 of the request's trailers, 3 of the response's
    assert proxy_mesh.caller.core.counters["trailer_fields_dropped"] == 7
