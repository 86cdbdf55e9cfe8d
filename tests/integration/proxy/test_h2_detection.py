"""One listener, both protocols: the first bytes decide between HTTP/1 and HTTP/2
(prior knowledge), however they are split across reads."""

from __future__ import annotations

import asyncio

from h2.connection import H2Connection
from h2.events import ResponseReceived, StreamEnded
from tests.support.h2_apps import H2Mesh, h2_mesh
from tests.support.polling import eventually

__all__ = ["h2_mesh"]


async def test_a_preface_dribbled_byte_by_byte_is_still_http2(h2_mesh: H2Mesh) -> None:
    reader, writer = await asyncio.open_connection(*h2_mesh.outbound)
    conn = H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "reviews"), (":path", "/slow")],
        end_stream=True,
    )
    data = conn.data_to_send()
    preface = 24
    for index in range(preface):
        writer.write(data[index : index + 1])
        await writer.drain()
        # yield to the loop, so that the bytes tend to arrive in separate reads
        await asyncio.sleep(0)
    writer.write(data[preface:])
    status = ""
    ended = False
    while not ended:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, "the proxy closed the connection"
        for event in conn.receive_data(chunk):
            if isinstance(event, ResponseReceived):
                status = dict(event.headers)[b":status"].decode()
            elif isinstance(event, StreamEnded):
                ended = True
        writer.write(conn.data_to_send())
    writer.close()
    assert status == "200"


async def test_http1_methods_that_start_like_the_preface_stay_http1(h2_mesh: H2Mesh) -> None:
    host, port = h2_mesh.outbound
    reader, writer = await asyncio.open_connection(host, port)
    # "P" is where the preface starts too ("PRI * HTTP/2.0")
    writer.write(b"PUT /put HTTP/1.1\r\nHost: reviews\r\nContent-Length: 0\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    # the app speaks only HTTP/2, so the HTTP/1 request fails upstream; what matters is
    # that the HTTP/1 side of the proxy answered it
    assert head.startswith(b"HTTP/1.1 ")
    await eventually(lambda: h2_mesh.mesh.caller.core.requests >= 1)
