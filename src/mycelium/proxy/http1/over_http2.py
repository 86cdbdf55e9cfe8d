"""An HTTP/1.1 request sent upstream as an HTTP/2 stream: the router's leg when a client
speaking HTTP/1.1 calls a service port whose protocol is HTTP2 or GRPC.

The request head becomes a block as Envoy maps it: the Host is the `:authority`, the
method, target and scheme become pseudo-headers, connection-specific fields (Connection
and what it names, Keep-Alive, Transfer-Encoding, Upgrade) are dropped and `te` is kept
only as `trailers`. A chunked body's trailers go as the stream's trailers.

The response comes back as an HTTP/1.1 message: the head with the status and its
phrase, the body framed by its Content-Length when the endpoint sent one and in chunks
otherwise, so that trailers (gRPC's status among them) reach the client in the last
chunk. This object stands where `DownstreamHttp1` expects an upstream connection
(`attach`, `pause_reading`, `resume_reading`): while the client does not read, the
endpoint's bytes are not acknowledged, and its flow-control window closes.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from mycelium.proxy.errors import UpstreamReset
from mycelium.proxy.protocols.http1 import (
    FRAMING_HEADERS,
    NO_BODY_STATUSES,
    Framing,
    ResponseReceived,
    reason_phrase,
)
from mycelium.proxy.protocols.http2 import Fields, parse_response, request_block, take_authority
from mycelium.proxy.router.attempts import (
    attempt_over,
    awaiting_head,
    endpoint_for,
)
from mycelium.proxy.router.connections import upstream_connection
from mycelium.proxy.router.forward import HeadAnswer
from mycelium.proxy.upstream.http1_pool import UpstreamHttp1

if TYPE_CHECKING:
    from mycelium.proxy.errors import ProxyError
    from mycelium.proxy.filters.chain import RuleChain
    from mycelium.proxy.http1.body import BodyStream
    from mycelium.proxy.router.engine import Http1Engine
    from mycelium.proxy.routing import RequestFacts
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.http1_pool import ResponseSink as Http1Sink
    from mycelium.proxy.upstream.http2_pool import UpstreamHttp2

# A streamed request body waits for the endpoint to take its bytes once this many are
# in flight, so that a fast client cannot fill the proxy's memory.
MAX_UNSENT_BYTES = 64 * 1024


class BridgedExchange(Protocol):
    """What the bridge reads and sets of an HTTP/1.1 exchange (`http1.exchange`)."""

    proxy: Http1Engine
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    host: str
    host_value: bytes
    facts: RequestFacts | None
    rule_name: str
    body: BodyStream | None
    chain: RuleChain | None
    status: int
    upstream_host: str
    started: float
    response_head_at: float
    response_started: bool

    @property
    def peer_host(self) -> str: ...

    def replayable(self, error: ProxyError | None) -> bool: ...

    def awaiting_response(self) -> asyncio.Future[None]: ...

    def stream_response(
        self, response: ResponseReceived, headers: list[tuple[bytes, bytes]], source: Any
    ) -> None: ...


class Http1OverHttp2:
    """The `UpstreamLeg` of an HTTP/1.1 exchange whose cluster speaks HTTP/2, and the
    response sink of each attempt's stream."""

    def __init__(self, exchange: BridgedExchange) -> None:
        self.exchange = exchange
        self.method = exchange.method
        self._conn: UpstreamHttp2 | None = None
        self._stream_id = 0
        self._head: asyncio.Future[Fields] | None = None
        self._early: list[bytes] = []  # response bytes before the client's sink attached
        self._ended: Fields | None = None  # the response's trailers once it ended ([]: none)
        self._sink: Http1Sink | None = None
        self._paused = False
        self._unacked = 0  # response bytes taken, not acknowledged to the endpoint
        self._in_flight = 0  # request bytes sent, not yet taken by the endpoint
        self._drained: asyncio.Future[None] | None = None
        self._failure: UpstreamReset | None = None

    # --- the leg ------------------------------------------------------------------------

    def replayable(self, error: ProxyError | None) -> bool:
        return self.exchange.replayable(error)

    async def attempt(
        self, cluster: ClusterRuntime, number: int, timeout: float, *, stated: str
    ) -> HeadAnswer:
        exchange = self.exchange
        proxy = exchange.proxy
        now = time.monotonic()
        endpoint = endpoint_for(cluster, now, exchange.headers, exchange.peer_host)
        exchange.upstream_host = endpoint.key
        deadline = asyncio.get_running_loop().time() + timeout
        conn = await upstream_connection(proxy, cluster, endpoint, timeout)
        assert not isinstance(conn, UpstreamHttp1)  # the cluster speaks HTTP/2
        endpoint.request_started(now)
        self._begin(conn)
        with awaiting_head(
            cluster, endpoint, exchange.started, stated, give_up=self._cancel, lost=self._lost
        ):
            async with asyncio.timeout_at(deadline):
                await self._send_body(conn)
                assert self._head is not None
                block = await self._head
        exchange.response_head_at = time.monotonic()
        status, headers = parse_response(block)
        return HeadAnswer(endpoint, status, headers)

    def discard(self, cluster: ClusterRuntime, answer: HeadAnswer) -> None:
        attempt_over(cluster, answer.endpoint, self.exchange.started, answer.status, ok=False)
        self._cancel()

    async def respond(self, cluster: ClusterRuntime, answer: HeadAnswer) -> None:
        exchange = self.exchange
        status = answer.status
        exchange.status = status
        headers = [(n, v) for n, v in answer.headers if n not in FRAMING_HEADERS]
        chain = exchange.chain
        if chain is not None:
            for response_filter in chain.response:
                headers = response_filter.on_response(exchange, headers)
        response = ResponseReceived(
            status=status,
            reason=reason_phrase(status),
            http_version=b"1.1",
            headers=headers,
            keep_alive=True,
            framing=self._framing(status, answer.headers),
        )
        done = exchange.awaiting_response()
        exchange.response_started = True
        exchange.stream_response(response, headers, self)
        ok = True
        try:
            await done
        except UpstreamReset:
            ok = False
            raise
        finally:
            attempt_over(cluster, answer.endpoint, exchange.started, status, ok=ok and status < 500)

    def _framing(self, status: int, fields: Fields) -> Framing:
        """How the response's body is framed for the client: none, by the endpoint's
        Content-Length, or in chunks (which can carry trailers)."""
        if self.method == b"HEAD" or status in NO_BODY_STATUSES or status < 200:
            return Framing(kind="none")
        lengths = [v for n, v in fields if n == b"content-length"]
        if len(lengths) == 1 and lengths[0].isdigit():
            return Framing(kind="length", length=int(lengths[0]))
        return Framing(kind="chunked")

    # --- the request --------------------------------------------------------------------

    def _begin(self, conn: UpstreamHttp2) -> None:
        exchange = self.exchange
        self._head = asyncio.get_running_loop().create_future()
        self._early = []
        self._ended = None
        self._unacked = 0
        self._in_flight = 0
        authority, fields = take_authority(exchange.headers, exchange.host_value)
        block = request_block(exchange.method, b"http", authority, exchange.target, fields)
        body = exchange.body
        self._conn = conn
        self._stream_id = conn.open_stream(block, self, end_stream=body is None)

    async def _send_body(self, conn: UpstreamHttp2) -> None:
        body = self.exchange.body
        if body is None:
            return
        stream_id = self._stream_id
        replay = body.replay()
        if replay is not None:
            for chunk in replay:
                conn.send_data(stream_id, chunk)
        else:
            while (piece := await body.next_chunk()) is not None:
                conn.send_data(stream_id, piece)
                self._in_flight += len(piece)
                if self._in_flight > MAX_UNSENT_BYTES:
                    self._drained = asyncio.get_running_loop().create_future()
                    await self._drained
        conn.end_request(stream_id, body.trailers or None)

    def _lost(self) -> None:
        self._conn = None  # the endpoint reset the stream: nothing to cancel

    def _cancel(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Bytes never read downstream still hold the connection's window: give them back.
            unacked, self._unacked = self._unacked, 0
            conn.acknowledge(self._stream_id, unacked)
            conn.cancel(self._stream_id)

    # --- the stream's sink --------------------------------------------------------------

    def response_headers(self, block: Fields) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_result(block)

    def response_data(self, data: bytes) -> None:
        self._unacked += len(data)
        sink = self._sink
        if sink is None:
            self._early.append(data)
            return
        sink.response_data(data)
        self._acknowledge()

    def response_trailers(self, block: Fields) -> None:
        self._end(list(block))

    def response_end(self) -> None:
        self._end([])

    def _end(self, trailers: Fields) -> None:
        if self._ended is not None:
            return  # trailers came first; their stream end follows
        self._ended = trailers
        sink = self._sink
        if sink is not None:
            # The stream is over: what it still holds of the connection's window goes
            # back now (the client's transport buffers the last of it).
            self._paused = False
            self._acknowledge()
            self._sink = None
            self._conn = None
            sink.response_end(trailers)

    def response_failed(self, exc: UpstreamReset) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
            return
        self._failure = exc
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.response_failed(exc)

    def request_data_sent(self, size: int) -> None:
        self._in_flight -= size
        drained = self._drained
        if drained is not None and self._in_flight <= MAX_UNSENT_BYTES // 2 and not drained.done():
            self._drained = None
            drained.set_result(None)

    # --- what the client's connection calls, as it would an HTTP/1.1 upstream --------------

    def attach(self, sink: Http1Sink) -> None:
        """The client's connection takes the body from here on."""
        self._sink = sink
        early, self._early = self._early, []
        for chunk in early:
            sink.response_data(chunk)
        self._acknowledge()
        if self._failure is not None:
            self._sink = None
            sink.response_failed(self._failure)
        elif self._ended is not None:
            self._paused = False
            self._acknowledge()
            self._sink = None
            self._conn = None
            sink.response_end(self._ended)
        else:
            sink.response_flush()

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._acknowledge()

    def _acknowledge(self) -> None:
        conn = self._conn
        if self._paused or conn is None or not self._unacked:
            return
        unacked, self._unacked = self._unacked, 0
        conn.acknowledge(self._stream_id, unacked)
