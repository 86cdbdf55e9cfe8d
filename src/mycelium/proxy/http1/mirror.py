"""Traffic mirroring over HTTP/1.1: the copy of a request whose body is whole goes to
the mirror cluster on a connection of its own; its response is read and dropped
(`router.mirror` says which cluster, and why a copy is never the real request's)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mycelium.proxy.protocols.http1 import encode_request_head
from mycelium.proxy.router.mirror import MIRROR_TIMEOUT_SECONDS, SHADOW_SUFFIX

if TYPE_CHECKING:
    from mycelium.proxy.http1.body import BodyStream
    from mycelium.proxy.router.engine import Http1Engine
    from mycelium.proxy.upstream.clusters import ClusterRuntime


def mirror_http1(
    proxy: Http1Engine,
    cluster: ClusterRuntime,
    request: tuple[bytes, bytes, list[tuple[bytes, bytes]]],
    body: BodyStream | None,
) -> None:
    """Send a copy of an HTTP/1.1 request (method, target, fields), its body whole."""
    method, target, fields = request
    replay = body.replay() if body is not None else []
    if replay is None:
        proxy.counters["mirror_skipped"] += 1
        return  # a streamed body cannot be copied
    headers = [
        (n, v + SHADOW_SUFFIX if n == b"host" else v)
        for n, v in fields
        if n not in (b"content-length", b"transfer-encoding")
    ]
    if body is not None:
        headers.append((b"content-length", str(sum(len(c) for c in replay)).encode()))
    head = encode_request_head(method, target, headers)
    proxy.spawn(_shadow_http1(proxy, cluster, method, head, replay))


async def _shadow_http1(
    proxy: Http1Engine, cluster: ClusterRuntime, method: bytes, head: bytes, body: list[bytes]
) -> None:
    endpoint = cluster.pick(time.monotonic())
    if endpoint is None:
        proxy.counters["mirror_failed"] += 1
        return
    pool = proxy.pools.get(endpoint.address, endpoint.port)
    try:
        async with asyncio.timeout(MIRROR_TIMEOUT_SECONDS):
            conn = await pool.acquire(cluster.settings.connection_pool.connect_timeout)
            waiter = conn.begin(method, head)
            for chunk in body:
                conn.write(chunk)
            await waiter
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            conn.attach(_DiscardHttp1(done))
            await done
        proxy.counters["mirror_sent"] += 1
    except Exception:  # the copy's failure is never the real request's
        proxy.counters["mirror_failed"] += 1


class _DiscardHttp1:
    """Reads an HTTP/1.1 response body to its end and drops it."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self._done = done

    def response_data(self, data: bytes) -> None:
        pass

    def response_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def response_failed(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)

    def response_flush(self) -> None:
        pass
