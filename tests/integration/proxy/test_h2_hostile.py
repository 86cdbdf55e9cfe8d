"""Hostile HTTP/2 clients against the sidecar, over real sockets: each attack gets its
connection refused (GOAWAY), nothing of it reaches the app, and a well-behaved client on
another connection is served meanwhile."""

from __future__ import annotations

import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from tests.support.h2_apps import H2Client, H2Mesh, HostileH2, h2_mesh

from mycelium.proxy.protocols.http2 import (
    MAX_CONCURRENT_STREAMS,
    MAX_CONTROL_FRAMES_PER_SECOND,
    MAX_HEADER_LIST_SIZE,
    MAX_RESETS_PER_SECOND,
)

__all__ = ["h2_mesh"]


async def assert_others_still_served(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        response = await client.request("/after")
    finally:
        await client.close()
    assert response.status == 200


def app_saw(h2_mesh: H2Mesh, path: str) -> int:
    return len([r for r in h2_mesh.v1.seen + h2_mesh.v2.seen if r["path"].startswith(path)])


async def test_a_rapid_reset_flood_gets_enhance_your_calm(h2_mesh: H2Mesh) -> None:
    hostile = await HostileH2.connect(*h2_mesh.outbound)
    frames: list[Frame] = []
    for n in range(3 * MAX_RESETS_PER_SECOND):
        stream_id = 2 * n + 1
        frames.append(hostile.headers(stream_id, hostile.block(f"/reset/{n}?delay=1")))
        frames.append(RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL))
    hostile.send(*frames)
    goaway = await hostile.goaway()
    hostile.close()
    assert goaway is not None
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert h2_mesh.mesh.caller.core.counters["refused_rapid_reset"] == 1
    await assert_others_still_served(h2_mesh)


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_a_control_frame_flood_gets_enhance_your_calm(h2_mesh: H2Mesh, kind: str) -> None:
    hostile = await HostileH2.connect(*h2_mesh.outbound)
    count = 5 * MAX_CONTROL_FRAMES_PER_SECOND
    if kind == "ping":
        hostile.send(*(PingFrame(0, opaque_data=n.to_bytes(8, "big")) for n in range(count)))
    else:
        hostile.send(*(SettingsFrame(0) for _ in range(count)))
    goaway = await hostile.goaway()
    hostile.close()
    assert goaway is not None
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert h2_mesh.mesh.caller.core.counters["refused_control_frame_flood"] == 1
    await assert_others_still_served(h2_mesh)


async def test_an_oversized_header_block_is_refused(h2_mesh: H2Mesh) -> None:
    hostile = await HostileH2.connect(*h2_mesh.outbound)
    block = hostile.block("/huge", **{"x-huge": "a" * (2 * MAX_HEADER_LIST_SIZE)})
    # split into CONTINUATION frames of 16 KiB, as a client must beyond one frame
    pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]
    first = HeadersFrame(1, pieces[0])
    first.flags.add("END_STREAM")
    frames: list[Frame] = [first]
    for index, piece in enumerate(pieces[1:], start=1):
        frame = ContinuationFrame(1, piece)
        if index == len(pieces) - 1:
            frame.flags.add("END_HEADERS")
        frames.append(frame)
    hostile.send(*frames)
    goaway = await hostile.goaway()
    hostile.close()
    assert goaway is not None
    assert goaway.error_code != ErrorCodes.NO_ERROR
    assert app_saw(h2_mesh, "/huge") == 0
    await assert_others_still_served(h2_mesh)


async def test_a_continuation_flood_is_refused(h2_mesh: H2Mesh) -> None:
    hostile = await HostileH2.connect(*h2_mesh.outbound)
    block = hostile.block("/continued", **{f"x-{n}": "v" for n in range(200)})
    frames: list[Frame] = [HeadersFrame(1, block[:1])]
    # one byte per CONTINUATION frame: far more frames than any real client sends
    frames += [ContinuationFrame(1, block[i : i + 1]) for i in range(1, len(block))]
    hostile.send(*frames)
    goaway = await hostile.goaway()
    hostile.close()
    assert goaway is not None
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    assert app_saw(h2_mesh, "/continued") == 0
    await assert_others_still_served(h2_mesh)


async def test_streams_beyond_the_concurrency_limit_are_refused(h2_mesh: H2Mesh) -> None:
    polite = await H2Client.connect(*h2_mesh.outbound)
    await polite.request("/hello")
    assert polite.conn.remote_settings.max_concurrent_streams == MAX_CONCURRENT_STREAMS
    await polite.close()

    hostile = await HostileH2.connect(*h2_mesh.outbound)
    hostile.send(
        *(
            hostile.headers(2 * n + 1, hostile.block(f"/many/{n}?delay=5"), end_stream=False)
            for n in range(MAX_CONCURRENT_STREAMS + 1)
        )
    )
    goaway = await hostile.goaway()
    hostile.close()
    assert goaway is not None
    assert goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    assert goaway.last_stream_id <= 2 * MAX_CONCURRENT_STREAMS - 1
    await assert_others_still_served(h2_mesh)
