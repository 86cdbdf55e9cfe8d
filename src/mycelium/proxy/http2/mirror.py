"""Traffic mirroring over HTTP/2: the copy of a stream (gRPC among them) goes to the
mirror cluster once its request body is whole; its response is read, acknowledged and
dropped (`router.mirror` says which cluster, and why a copy is never the real one's)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mycelium.proxy.errors import UpstreamReset
from mycelium.proxy.protocols.http2 import Fields, request_block
from mycelium.proxy.router.mirror import MIRROR_TIMEOUT_SECONDS, SHADOW_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from mycelium.proxy.router.engine import Engine
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.http2_pool import UpstreamHttp2


type WholeBody = Callable[[], Awaitable[tuple[list[bytes], Fields | None] | None]]


def mirror_http2(
    proxy: Engine,
    cluster: ClusterRuntime,
    request: tuple[bytes, bytes, bytes, bytes, Fields],
    whole_body: WholeBody,
) -> None:
    """Send a copy of an HTTP/2 stream (method, scheme, authority, path, fields) once
    `whole_body` has its request body and trailers."""
    method, scheme, authority, path, fields = request
    headers = [(n, v) for n, v in fields if n != b"host"]
    block = request_block(method, scheme, authority + SHADOW_SUFFIX, path, headers)
    proxy.spawn(_shadow_http2(proxy, cluster, whole_body, block))


async def _shadow_http2(
    proxy: Engine, cluster: ClusterRuntime, whole_body: WholeBody, block: Fields
) -> None:
    conn: UpstreamHttp2 | None = None
    sink: _DiscardHttp2 | None = None
    try:
        async with asyncio.timeout(MIRROR_TIMEOUT_SECONDS):
            body = await whole_body()
            if body is None:
                proxy.counters["mirror_skipped"] += 1
                return  # too large to hold, or the client went away
            chunks, trailers = body
            endpoint = cluster.pick(time.monotonic())
            if endpoint is None:
                proxy.counters["mirror_failed"] += 1
                return
            conn = await proxy.h2_pools.acquire(
                endpoint.address, endpoint.port, cluster.settings.connection_pool.connect_timeout
            )
            sink = _DiscardHttp2(conn)
            ends_now = not chunks and trailers is None
            sink.stream_id = conn.open_stream(block, sink, end_stream=ends_now)
            for chunk in chunks:
                conn.send_data(sink.stream_id, chunk)
            if not ends_now:
                conn.end_request(sink.stream_id, trailers)
            await sink.done
        proxy.counters["mirror_sent"] += 1
    except Exception:  # the copy's failure is never the real request's
        proxy.counters["mirror_failed"] += 1
        if conn is not None and sink is not None and not sink.done.done():
            conn.cancel(sink.stream_id)


class _DiscardHttp2:
    """An HTTP/2 response sink that drops the body and acknowledges it at once, so the
    endpoint's window never closes on a copy nobody reads."""

    def __init__(self, conn: UpstreamHttp2) -> None:
        self.conn = conn
        self.stream_id = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def response_headers(self, block: Fields) -> None:
        pass

    def response_data(self, data: bytes) -> None:
        self.conn.acknowledge(self.stream_id, len(data))

    def response_trailers(self, block: Fields) -> None:
        self.response_end()

    def response_end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def response_failed(self, exc: UpstreamReset) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def request_data_sent(self, size: int) -> None:
        pass
