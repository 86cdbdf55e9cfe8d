"""An HTTP/2 stream sent upstream as an HTTP/1.1 request: how a client speaking HTTP/2
(gRPC among them) reaches a service port whose protocol is HTTP, which is spoken over
HTTP/1.1.

The stream's fields become a request head as Envoy maps them: `:authority` is the Host
(the stream already carries it as a `host` field), the method and path make the request
line, fields that HTTP/1.1 treats as hop-by-hop are dropped. The body keeps its
Content-Length when the stream had ended before the attempt began, and goes in chunks
otherwise, so that request trailers still have somewhere to go.

The response comes back to the stream as HTTP/2 events: its head as a block (without
Connection, Keep-Alive or Transfer-Encoding), its body as data, a chunked body's
trailers as the stream's trailers. Flow control holds both ways: request bytes are
acknowledged to the client once the upstream connection takes them, and the upstream
connection stops being read while the client's window has more than
`MAX_UNACKED_BYTES` of its bytes outstanding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mycelium.proxy.errors import ProxyError, UpstreamReset
from mycelium.proxy.protocols.headers import strip_hop_by_hop
from mycelium.proxy.protocols.http1 import (
    FRAMING_HEADERS,
    ResponseReceived,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
)
from mycelium.proxy.protocols.http2 import Fields, response_block

if TYPE_CHECKING:
    import asyncio

    from mycelium.proxy.upstream.http1_pool import UpstreamHttp1
    from mycelium.proxy.upstream.http2_pool import ResponseSink

# Response bytes the client has not yet taken before the upstream connection stops
# being read (an HTTP/2 client's default stream window).
MAX_UNACKED_BYTES = 64 * 1024


def request_head(
    method: bytes,
    path: bytes,
    fields: Fields,
    *,
    length: int | None,
    chunked: bool,
) -> bytes:
    """The HTTP/1.1 head of a stream's request (its fields include `host`)."""
    headers = [(n, v) for n, v in strip_hop_by_hop(fields) if n not in FRAMING_HEADERS]
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    elif length is not None:
        headers.append((b"content-length", str(length).encode()))
    return encode_request_head(method, path, headers)


class Http1Attempt:
    """One attempt of a stream on an HTTP/1.1 connection: the stream's binding (what it
    sends upstream) and the connection's response sink (what comes back)."""

    def __init__(self, events: ResponseSink, conn: UpstreamHttp1, *, chunked: bool) -> None:
        self._events = events
        self._conn = conn
        self._chunked = chunked
        self._unacked = 0
        self._paused = False
        self._cancelled = False

    def begin(self, method: bytes, head: bytes) -> None:
        """Write the request head; the response head reaches the stream when it comes."""
        waiter = self._conn.begin(method, head)
        waiter.add_done_callback(self._head_came)

    @property
    def closed(self) -> bool:
        return self._cancelled or self._conn.closed

    # --- the stream's binding -----------------------------------------------------------

    def send_data(self, data: bytes) -> None:
        conn = self._conn
        conn.write(encode_chunk(data) if self._chunked else data)
        conn.when_writable(lambda: self._events.request_data_sent(len(data)))

    def end_request(self, trailers: Fields | None) -> None:
        if self._chunked:
            self._conn.write(encode_last_chunk(trailers or ()))

    def acknowledge(self, size: int) -> None:
        """The client took `size` of the response's bytes."""
        self._unacked -= size
        if self._paused and self._unacked <= MAX_UNACKED_BYTES // 2:
            self._paused = False
            self._conn.resume_reading()

    def cancel(self) -> None:
        """Nobody wants the answer: an HTTP/1.1 request cannot be called off but by
        closing its connection."""
        if not self._cancelled:
            self._cancelled = True
            self._conn.abort()

    # --- the connection's response sink -------------------------------------------------

    def _head_came(self, waiter: asyncio.Future[ResponseReceived]) -> None:
        if self._cancelled or waiter.cancelled():
            return
        exc = waiter.exception()
        if exc is not None:
            self._events.response_failed(_as_reset(exc))
            return
        response = waiter.result()
        if response.status == 101 or response.upgrade:
            self.cancel()
            self._events.response_failed(
                UpstreamReset("the upstream switched protocols on an HTTP/2 stream's request")
            )
            return
        fields = [
            (n, v) for n, v in strip_hop_by_hop(response.headers) if n != b"transfer-encoding"
        ]
        self._events.response_headers(response_block(response.status, fields))
        self._conn.attach(self)

    def response_data(self, data: bytes) -> None:
        self._unacked += len(data)
        self._events.response_data(data)
        if not self._paused and self._unacked > MAX_UNACKED_BYTES:
            self._paused = True
            self._conn.pause_reading()

    def response_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if trailers:
            self._events.response_trailers(trailers)
        else:
            self._events.response_end()

    def response_failed(self, exc: BaseException) -> None:
        self._events.response_failed(_as_reset(exc))

    def response_flush(self) -> None:
        pass


def _as_reset(exc: BaseException) -> UpstreamReset:
    if isinstance(exc, UpstreamReset):
        return exc
    reset = UpstreamReset(exc.detail if isinstance(exc, ProxyError) else str(exc))
    if isinstance(exc, ProxyError):
        reset.reason, reset.status = exc.reason, exc.status
    return reset
