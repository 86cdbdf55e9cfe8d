"""Traffic mirroring: a copy of a request goes to another cluster, and is forgotten.

A rule's `mirror` sends that share of its requests, with the body, to the mirror
cluster; the copy's `host` (`:authority` over HTTP/2) gets a `-shadow` suffix, as
Istio's and Envoy's do, so the receiving service can tell it is not real traffic. The
copy never changes the real response: it is sent on its own task, its response is read
and dropped, and its failures are only counted (`mirror_sent`, `mirror_failed`,
`mirror_skipped`). A body too large to hold whole (a streamed one) is not copied.

HTTP/1.1 requests are copied over HTTP/1.1, HTTP/2 requests (gRPC among them) over
HTTP/2, as their real upstreams receive them.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg
from mycelium.proxy.active_config import ActiveConfig
from mycelium.proxy.errors import UpstreamReset
from mycelium.proxy.h2.upstream import UpstreamHttp2, pools_of
from mycelium.proxy.protocols.http1 import encode_request_head
from mycelium.proxy.protocols.http2 import Fields, request_block

if TYPE_CHECKING:
    from mycelium.proxy.core import ProxyCore
    from mycelium.proxy.h2.stream import Http2Exchange
    from mycelium.proxy.http.exchange import Exchange
    from mycelium.proxy.upstream.clusters import ClusterRuntime

# How long a copy may take, its body included, before it is abandoned.
MIRROR_TIMEOUT_SECONDS = 5.0
SHADOW_SUFFIX = b"-shadow"


def _mirror_cluster(
    proxy: ProxyCore, config: ActiveConfig, policy: cfg.MirrorPolicy, port: int
) -> ClusterRuntime | None:
    """The cluster this request's copy goes to, or None when it sends no copy."""
    if policy.percentage < 100 and proxy.rng.random() * 100 >= policy.percentage:
        return None
    if policy.cluster not in config.clusters:
        proxy.counters["mirror_skipped"] += 1
        return None
    return proxy.cluster(config, policy.cluster, policy.port or port)


# --- HTTP/1.1 --------------------------------------------------------------------------------


def mirror_http1(
    proxy: ProxyCore, exchange: Exchange, config: ActiveConfig, policy: cfg.MirrorPolicy, port: int
) -> None:
    """Send a copy of an HTTP/1.1 request (its body is already whole, or streams)."""
    cluster = _mirror_cluster(proxy, config, policy, port)
    if cluster is None:
        return
    body = exchange.body
    replay = body.replay() if body is not None else []
    if replay is None:
        proxy.counters["mirror_skipped"] += 1
        return  # a streamed body cannot be copied
    headers = [
        (n, v + SHADOW_SUFFIX if n == b"host" else v)
        for n, v in exchange.headers
        if n not in (b"content-length", b"transfer-encoding")
    ]
    if body is not None:
        headers.append((b"content-length", str(sum(len(c) for c in replay)).encode()))
    head = encode_request_head(exchange.method, exchange.target, headers)
    proxy.spawn(_shadow_http1(proxy, cluster, exchange.method, head, replay))


async def _shadow_http1(
    proxy: ProxyCore, cluster: ClusterRuntime, method: bytes, head: bytes, body: list[bytes]
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


# --- HTTP/2 ----------------------------------------------------------------------------------


def mirror_http2(
    proxy: ProxyCore,
    exchange: Http2Exchange,
    config: ActiveConfig,
    policy: cfg.MirrorPolicy,
    port: int,
) -> None:
    """Send a copy of an HTTP/2 stream once its request body is whole."""
    cluster = _mirror_cluster(proxy, config, policy, port)
    if cluster is None:
        return
    headers = [(n, v) for n, v in exchange.headers if n != b"host"]
    authority = exchange.authority() + SHADOW_SUFFIX
    block = request_block(exchange.method, exchange.scheme, authority, exchange.target, headers)
    proxy.spawn(_shadow_http2(proxy, cluster, exchange, block))


async def _shadow_http2(
    proxy: ProxyCore, cluster: ClusterRuntime, exchange: Http2Exchange, block: Fields
) -> None:
    conn: UpstreamHttp2 | None = None
    sink: _DiscardHttp2 | None = None
    try:
        async with asyncio.timeout(MIRROR_TIMEOUT_SECONDS):
            body = await exchange.whole_body()
            if body is None:
                proxy.counters["mirror_skipped"] += 1
                return  # too large to hold, or the client went away
            chunks, trailers = body
            endpoint = cluster.pick(time.monotonic())
            if endpoint is None:
                proxy.counters["mirror_failed"] += 1
                return
            conn = await pools_of(proxy).acquire(
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
