"""The upstream pool hands a waiting request whichever connection is ready first: one a
finished request releases, or the one dialled for it. A slow dial (an mTLS handshake
costs milliseconds of CPU) then holds up a request only when nothing frees sooner.

The server is real (a TCP listener on loopback); what is slowed down is the pool's
dial, by wrapping its `connect` in a delay, since a loopback connect is too fast to
race against."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from tests.support.polling import eventually

from mycelium.proxy.errors import UpstreamConnectFailed
from mycelium.proxy.upstream.http1_pool import EndpointPool, UpstreamHttp1


@pytest.fixture
async def server_port() -> AsyncIterator[int]:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def slow_dials(pool: EndpointPool, delay: float) -> list[float]:
    """Make every dial of `pool` take `delay` seconds longer; returns when each ended."""
    real = pool.connect
    ended: list[float] = []

    async def connect(timeout: float) -> UpstreamHttp1:
        await asyncio.sleep(delay)
        conn = await real(timeout)
        ended.append(time.monotonic())
        return conn

    pool.connect = connect  # type: ignore[method-assign]
    return ended


async def test_a_connection_released_during_a_dial_serves_the_waiting_request(
    server_port: int,
) -> None:
    pool = EndpointPool("127.0.0.1", server_port)
    first = await pool.acquire(5.0)  # busy with a request from here on
    dials = slow_dials(pool, 2.0)

    started = time.monotonic()
    waiting = asyncio.create_task(pool.acquire(5.0))
    await asyncio.sleep(0.05)
    pool.release(first)  # that request finished
    second = await asyncio.wait_for(waiting, 1.0)

    assert second is first
    assert time.monotonic() - started < 1.0  # not the 2 s of the dial
    assert dials == []  # the dial still runs: its connection will wait, idle
    await eventually(lambda: len(dials) == 1, what="the dial's end")
    pool.release(second)
    assert pool.open == 2
    idle = [await pool.acquire(5.0), await pool.acquire(5.0)]
    assert first in idle  # both connections are there, neither was lost
    for conn in idle:
        pool.release(conn)
    pool.close_idle()


async def test_a_failed_dial_fails_the_request_waiting_for_it() -> None:
    pool = EndpointPool("127.0.0.1", 9)  # discard port: nothing listens on loopback
    with pytest.raises(UpstreamConnectFailed, match=r"127\.0\.0\.1:9"):
        await asyncio.wait_for(pool.acquire(1.0), 5)


async def test_a_request_right_after_a_dial_ended_is_not_left_waiting(server_port: int) -> None:
    """A dial that has handed its connection over is finished, even in the moment
    before asyncio runs its done-callbacks: a request arriving then (here: the very
    request that got the connection, asking again in the same step, as a retry does)
    must start a dial of its own instead of waiting for that finished one."""
    pool = EndpointPool("127.0.0.1", server_port)

    async def take_two() -> tuple[UpstreamHttp1, UpstreamHttp1]:
        first = await pool.acquire(5.0)
        return first, await pool.acquire(5.0)  # no await in between: the same step

    first, second = await asyncio.wait_for(take_two(), 5.0)

    assert first is not second
    assert pool.open == 2
    for conn in (first, second):
        pool.release(conn)
    pool.close_idle()
