"""Flow control end to end: a large response to a client that reads slowly makes the
app wait, not the proxy buffer. The proxy acknowledges the app's bytes only as the
client's window lets them leave, so what sits between app and client stays within the
proxy's stream window plus the client's own window."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.h2_apps import H2Client, H2Mesh, h2_mesh
from tests.support.polling import eventually

from mycelium.proxy.http2.downstream import DownstreamHttp2
from mycelium.proxy.protocols.http2 import STREAM_WINDOW_BYTES

__all__ = ["h2_mesh"]

BODY_BYTES = 20_000_000
CLIENT_WINDOW = 1024 * 1024
# What may sit between the app and the client: the proxy's window towards the app, the
# client's window (sent towards it), and one frame of slack each way.
IN_FLIGHT_BOUND = STREAM_WINDOW_BYTES + CLIENT_WINDOW + 2 * 16384


def proxy_buffered(h2_mesh: H2Mesh) -> int:
    core = h2_mesh.mesh.caller.core
    downstream = sum(c.buffered_bytes for c in core.connections if isinstance(c, DownstreamHttp2))
    upstream = sum(c.buffered_bytes for c in core.h2_pools.connections())
    return downstream + upstream


async def test_a_slow_reader_of_20_mb_stops_the_app_not_the_proxy(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound, auto_ack=False, window=CLIENT_WINDOW)
    apps = (h2_mesh.v1, h2_mesh.v2)
    peak_buffered = 0
    stalls_seen = 0
    try:
        response = client.start(f"/big?size={BODY_BYTES}")
        done = response.done
        assert done is not None
        acked = 0
        while not done.done():
            # Read until the window we gave is used up: then we are the slow reader.
            def window_used(acked: int = acked) -> bool:
                return done.done() or len(response.body) - acked >= CLIENT_WINDOW

            await eventually(window_used)
            if done.done():
                break
            received = len(response.body)

            def app_waits(received: int = received) -> bool:
                sent = sum(app.sent_bytes for app in apps)
                assert sent - received <= IN_FLIGHT_BOUND, f"{sent - received} bytes in flight"
                # the app waits for window (or has sent everything there is)
                return sent == BODY_BYTES or any(app.blocked for app in apps)

            await eventually(app_waits)
            stalls_seen += 1
            peak_buffered = max(peak_buffered, proxy_buffered(h2_mesh))
            client.ack(response.stream_id, received - acked)
            acked = received
        await asyncio.wait_for(done, 10)
    finally:
        await client.close()
    assert response.status == 200
    assert len(response.body) == BODY_BYTES
    assert stalls_seen >= BODY_BYTES // CLIENT_WINDOW - 1
    assert peak_buffered <= STREAM_WINDOW_BYTES, peak_buffered


async def test_a_client_reset_cancels_the_upstream_stream(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound, auto_ack=False)
    apps = (h2_mesh.v1, h2_mesh.v2)
    try:
        response = client.start(f"/big?size={BODY_BYTES}")
        await eventually(lambda: any(app.blocked for app in apps), what="the app waiting")
        client.conn.reset_stream(response.stream_id)
        client.flush()
        await eventually(lambda: sum(app.resets for app in apps) == 1, what="the app's reset")
        await eventually(lambda: proxy_buffered(h2_mesh) == 0, what="the proxy's buffers empty")
        # what arrived for the reset stream still counts against the connection's window
        client.ack(response.stream_id, len(response.body))
        again = await client.request("/after")  # the connection goes on
    finally:
        await client.close()
    assert again.status == 200
    assert not any(app.blocked for app in apps)
    assert sum(app.sent_bytes for app in apps) < BODY_BYTES // 10


# Cancelled while the endpoint still sends; cancelled after the endpoint finished (the
# proxy still holds the end of the response for the client's window).
@pytest.mark.parametrize("size", [2_000_000, 200_000])
async def test_cancelled_streams_give_the_endpoint_connection_its_window_back(
    h2_mesh: H2Mesh, size: int
) -> None:
    # Each cancelled stream held up to the proxy's stream window of the endpoint's bytes;
    # unless they are credited back, a few cancels exhaust the endpoint connection's window.
    apps = (h2_mesh.v1, h2_mesh.v2)
    core = h2_mesh.mesh.caller.core
    client = await H2Client.connect(*h2_mesh.outbound, auto_ack=False)
    try:
        for n in range(12):
            response = client.start(f"/cancelled/{n}?size={size}")
            if size > STREAM_WINDOW_BYTES:
                await eventually(lambda: any(app.blocked for app in apps), what="app waiting")
            else:
                await eventually(lambda n=n: core.counters["h2_streams"] >= n + 1)
            buffered = proxy_buffered(h2_mesh)
            assert buffered > 0
            client.conn.reset_stream(response.stream_id)
            client.ack(response.stream_id, len(response.body))
            await eventually(lambda: proxy_buffered(h2_mesh) == 0, what="buffers emptied")
    finally:
        await client.close()
    reader = await H2Client.connect(*h2_mesh.outbound)
    try:
        responses = [reader.start(f"/whole/{n}?size=3000000") for n in range(4)]
        await asyncio.wait_for(asyncio.gather(*(r.done for r in responses)), 20)  # type: ignore[arg-type]
    finally:
        await reader.close()
    assert [len(r.body) for r in responses] == [3_000_000] * 4
