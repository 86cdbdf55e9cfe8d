"""The downstream side of HTTP/1.1: one `asyncio.Protocol` per client connection.

Callbacks never await. Bytes go through the sans-IO `RequestParser`; each request
becomes an `Exchange`, one at a time per connection (pipelined requests wait their
turn, in order), which runs inside this callback when it can and as a task otherwise.
The connection is also the sink of the response body: the upstream connection writes
straight into it, and a slow client pauses the upstream's reading.

Slow or silent clients are bounded: a request head must arrive within
`HEADER_TIMEOUT_SECONDS` of its first byte, and an idle keep-alive connection is closed
after `IDLE_TIMEOUT_SECONDS`. Bad bytes get the parser's status and reason, then the
connection closes; other connections are not affected.

A request that asks to upgrade stops the parser (and reading) until it is answered: a
101 hands this connection's transport and the upstream's to a `TcpRelay`, which moves
raw bytes both ways under flow control from then on (this protocol is done with it);
any other answer leaves the connection HTTP/1.1, its unread bytes fed to a new parser.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, cast

from mycelium.net.relay import TcpRelay
from mycelium.proxy.errors import REASON_HEADER, ClientGone, ProxyError, RequestTimeout
from mycelium.proxy.http1.body import BodyStream
from mycelium.proxy.http1.exchange import Exchange
from mycelium.proxy.protocols.headers import trailers_to_forward
from mycelium.proxy.protocols.http1 import (
    NO_BODY,
    NO_BODY_STATUSES,
    DataReceived,
    Http1Error,
    MessageEnded,
    RequestParser,
    RequestReceived,
    ResponseReceived,
    encode_chunk,
    encode_continue,
    encode_last_chunk,
    encode_response_head,
    reason_phrase,
)
from mycelium.telemetry.metrics import PEER_HEADER

if TYPE_CHECKING:
    from mycelium.proxy.router.engine import Http1Engine
    from mycelium.proxy.router.roles import Role
    from mycelium.proxy.upstream.http1_pool import UpstreamHttp1

# A client has this long to send a whole request head once it started one (slowloris).
HEADER_TIMEOUT_SECONDS = 10.0
# An idle keep-alive connection is closed after this long (nginx's default is 75 s).
IDLE_TIMEOUT_SECONDS = 60.0
# A connection that came over mTLS is another sidecar's pooled connection: it closes its
# idle ones after http1_pool.MTLS_IDLE_TIMEOUT_SECONDS (300 s), and we must not close first.
MTLS_IDLE_TIMEOUT_SECONDS = 360.0
# An upgraded connection (WebSocket) with no byte either way for this long is closed;
# Envoy's default idle timeout for a connection is one hour too.
UPGRADED_IDLE_TIMEOUT_SECONDS = 3600.0
# Both are enforced by `ProxyCore`'s sweep, which looks once a second: a timer per
# request (armed and cancelled twice each) cost more than the whole routing decision.


class DownstreamHttp1(asyncio.Protocol):
    def __init__(self, proxy: Http1Engine, role: Role) -> None:
        # connection
        self.proxy = proxy
        self.role = role
        self.transport: asyncio.Transport | None = None
        self.peer_host = ""
        self.peer_principal: str | None = None
        # The calling proxy's workload, from its first request (mTLS peers only).
        self.peer_metadata: bytes | None = None
        self._expect_introduction = False
        self.idle_timeout = IDLE_TIMEOUT_SECONDS
        self.parser = RequestParser(proxy.http1_limits)
        self.closing = False
        self._lost = False  # the client's side of the connection is gone
        # requests
        self._queue: deque[tuple[RequestReceived, BodyStream | None]] = deque()
        self._receiving: BodyStream | None = None
        self._active: Exchange | None = None
        # response
        self._chunked = False
        self._keep_alive = True
        self._upstream: UpstreamHttp1 | None = None
        self._write_paused = False
        self._pending_head = b""
        # timeouts, checked by the core's sweep: when the connection went idle, and when
        # the first byte of a request head arrived (None: not in that state)
        self.idle_since: float | None = None
        self.head_started: float | None = None

    # --- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""
        # The peer's SPIFFE ID when the connection came through mTLS (tls_layer).
        identity = transport.get_extra_info("peer_identity")
        self.peer_principal = identity.uri if identity is not None else None
        if identity is not None:
            self.idle_timeout = MTLS_IDLE_TIMEOUT_SECONDS
            self._expect_introduction = True
        self.proxy.connections.add(self)
        self.idle_since = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._lost = True
        active = self._active
        if active is None or not active.deadline:
            self.proxy.connections.discard(self)
        # else: the sweep must still time out the response head that request awaits (its
        # default timeout has no timer of its own); `exchange_done` lets go of us then.
        if self._receiving is not None:
            self._receiving.fail(ClientGone("the client went away"))
        upstream = self._upstream
        if upstream is not None:
            self._upstream = None
            upstream.abort()  # nobody will read the rest of this response
            if self._active is not None:
                self._active.response_over(ClientGone("the client went away"))
        elif active is not None:
            active.client_left()  # the response has not begun: give the attempt up

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except Http1Error as exc:
            self._refuse(exc)
            return
        if self.idle_since is not None:
            self.idle_since = None
            if len(events) == 2 and self._active is None and not self._queue:
                head = events[0]
                # The most common read: one whole request without a body, on an idle
                # connection. It starts at once, without the queue.
                if (
                    type(head) is RequestReceived
                    and head.framing is NO_BODY
                    and head.upgrade is None
                    and not self.closing
                ):
                    self._start(head, None)
                    return
            self.head_started = time.monotonic()  # cleared below if the head is whole
        for event in events:
            if isinstance(event, RequestReceived):
                self.head_started = None
                body: BodyStream | None = None
                if event.framing.kind != "none":
                    body = BodyStream(self._pause_reading, self._resume_reading)
                    self._receiving = body
                    if event.expect_continue:
                        # We take the body ourselves (Envoy does the same by default):
                        # the client may send it now; the upstream never sees Expect.
                        self._write(encode_continue())
                self._queue.append((event, body))
                transport = self.transport
                if event.upgrade is not None and transport is not None and transport.is_reading():
                    # The parser stops after it; hold the next bytes in the socket
                    # until the upstream has answered the upgrade.
                    transport.pause_reading()
            elif isinstance(event, DataReceived) and self._receiving is not None:
                self._receiving.feed(event.data)
            elif isinstance(event, MessageEnded) and self._receiving is not None:
                self._receiving.finish(trailers_to_forward(event.trailers, self.proxy.counters))
                self._receiving = None
        self._start_next()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._upstream is not None:
            self._upstream.resume_reading()

    # --- requests ------------------------------------------------------------------------

    def _start_next(self) -> None:
        if self._active is not None or not self._queue or self.closing:
            return
        head, body = self._queue[0]
        if body is not None and not body.ready:
            return  # wait for more of the body (or for enough to stream)
        self._queue.popleft()
        self._start(head, body)

    def _start(self, head: RequestReceived, body: BodyStream | None) -> None:
        if self._expect_introduction:
            self._expect_introduction = False
            head = self._take_introduction(head)
        exchange = Exchange(self.proxy, self, head, body, self.role)
        self._active = exchange
        exchange.start()

    def _take_introduction(self, head: RequestReceived) -> RequestReceived:
        """The first request over mTLS may carry the calling proxy's metadata: keep it
        for telemetry and take it out of the request (once per connection)."""
        for name, value in head.headers:
            if name == PEER_HEADER:
                self.peer_metadata = value
                headers = [(n, v) for n, v in head.headers if n != PEER_HEADER]
                return replace(head, headers=headers, forwardable=False)
        return head

    def exchange_done(self, exchange: Exchange, ended: float) -> None:
        self._active = None
        self._upstream = None
        if self._lost:
            self.proxy.connections.discard(self)
        if self.closing or self.transport is None:
            return
        body = exchange.body
        unread = body is not None and not body.complete
        if not self._keep_alive or unread or self.proxy.draining:
            self._close()
            return
        self._keep_alive = True
        if exchange.head.upgrade is not None and self.parser.stopped:
            self._resume_http1()
            return
        if self._queue:
            self._start_next()
        else:
            self.idle_since = ended

    def _resume_http1(self) -> None:
        """The upstream declined the upgrade: what the client sent after that request is
        HTTP/1.1 again, for a new parser."""
        rest = self.parser.take_remaining()
        self.parser = RequestParser(self.proxy.http1_limits)
        self.idle_since = time.monotonic()
        transport = self.transport
        if transport is not None and not transport.is_reading():
            transport.resume_reading()
        if rest:
            self.data_received(rest)

    def switch_protocols(self, head: bytes, upstream: UpstreamHttp1) -> bool:
        """The upstream accepted the upgrade: write its 101 `head`, then relay bytes
        between the two connections; False (nothing written) if either is gone."""
        transport = self.transport
        if transport is None or self.closing or transport.is_closing():
            return False
        handed = upstream.hand_over()
        if handed is None:
            return False
        upstream_transport, upstream_rest = handed
        # Bytes the parsers read past the heads go first, each in its direction.
        transport.write(head + upstream_rest if upstream_rest else head)
        client_rest = self.parser.take_remaining()
        self.transport = None
        self.closing = True
        self._upstream = None
        self.proxy.connections.discard(self)  # the relay owns the connection now
        relay = TcpRelay(
            transport, initial_data=client_rest, idle_timeout=UPGRADED_IDLE_TIMEOUT_SECONDS
        )
        relay.attach_upstream(upstream_transport)
        self.proxy.relays.add(relay)  # so that a drain ends it at its deadline
        if not upstream_transport.is_closing() and not upstream_transport.is_reading():
            upstream_transport.resume_reading()  # paused at the 101 by `UpstreamHttp1`
        self.proxy.counters["upgraded_connections"] += 1
        self.proxy.spawn(self._relayed(relay))
        return True

    async def _relayed(self, relay: TcpRelay) -> None:
        try:
            result = await relay.wait()
        finally:
            self.proxy.relays.discard(relay)
        counters = self.proxy.counters
        counters["upgraded_connections_closed"] += 1
        counters["upgraded_bytes_to_upstream"] += result.bytes_to_upstream
        counters["upgraded_bytes_to_downstream"] += result.bytes_to_downstream

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    # --- responses ------------------------------------------------------------------------

    def start_response(  # noqa: PLR0917 - positional on purpose: once per request, hot
        self,
        exchange: Exchange,
        response: ResponseReceived,
        headers: list[tuple[bytes, bytes]],
        upstream: UpstreamHttp1,
        raw_head: bytes | None = None,
        hold_head: bool = False,
    ) -> None:
        """Write the response head; the body then flows from `upstream` into this sink,
        and `exchange.response_over` is called when it ended or failed.

        `raw_head` is the upstream's head to send as is, when it needs no change;
        `hold_head` keeps the head until `response_flush` (the caller is inside the
        upstream's read, whose body bytes will follow)."""
        framing = response.framing
        keep_alive = exchange.head.keep_alive and not self.proxy.draining
        if raw_head is not None:
            # The exchange checked that it needs no change: a body framed by its length or
            # by chunks (which we write again as chunks), and a connection kept alive.
            self._chunked = framing.kind == "chunked"
            self._keep_alive = keep_alive
            self._pending_head = raw_head
        else:
            self._pending_head = self._response_head(exchange, response, headers, keep_alive)
        # The head waits for the body bytes that usually came in the same segment, so
        # that head and body leave in one write (one system call instead of two).
        self._upstream = upstream
        if self._write_paused:
            upstream.pause_reading()
        upstream.attach(self)
        if self._pending_head and not hold_head:
            # no body yet: do not hold the head back (streams, SSE)
            self._write(self._pending_head)
            self._pending_head = b""

    def _response_head(
        self,
        exchange: Exchange,
        response: ResponseReceived,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
    ) -> bytes:
        """The head written for the client, with our framing and connection fields."""
        status = response.status
        framing = response.framing
        bodiless = exchange.method == b"HEAD" or status in NO_BODY_STATUSES or status < 200
        self._chunked = False
        if bodiless:
            pass  # the upstream's Content-Length, if any, is still among the headers
        elif framing.kind == "length":
            headers.append((b"content-length", str(framing.length).encode()))
        elif framing.kind == "chunked" or (
            framing.kind == "close" and exchange.head.http_version == b"1.1"
        ):
            headers.append((b"transfer-encoding", b"chunked"))
            self._chunked = True
        elif framing.kind == "close":
            keep_alive = False
        self._keep_alive = keep_alive
        if not keep_alive:
            headers.append((b"connection", b"close"))
        return encode_response_head(status, response.reason, headers)

    def response_flush(self) -> None:
        if self._pending_head:
            self._write(self._pending_head)
            self._pending_head = b""

    def response_data(self, data: bytes) -> None:
        if self._active is not None:
            self._active.bytes_sent += len(data)
        payload = encode_chunk(data) if self._chunked else data
        if self._pending_head:
            payload = self._pending_head + payload
            self._pending_head = b""
        self._write(payload)

    def response_end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if trailers:
            trailers = trailers_to_forward(trailers, self.proxy.counters)
        ending = encode_last_chunk(trailers) if self._chunked else b""
        if self._pending_head:
            ending = self._pending_head + ending
            self._pending_head = b""
        if ending:
            self._write(ending)
        self._upstream = None
        if self._active is not None:
            self._active.response_over(None)

    def response_failed(self, exc: BaseException) -> None:
        self._upstream = None
        if self._active is not None:
            self._active.response_over(exc)

    def local_reply(self, exchange: Exchange, error: ProxyError) -> None:
        """Answer a request ourselves, saying why in `x-mycelium-reason`."""
        body = f"{error.reason}: {error.detail}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (REASON_HEADER, error.reason.encode()),
        ]
        if error.retry_after is not None:
            headers.append((b"retry-after", str(int(error.retry_after)).encode()))
        request_body = exchange.body
        keep_alive = (
            exchange.head.keep_alive
            and not self.proxy.draining
            and (request_body is None or request_body.complete)
        )
        if not keep_alive:
            headers.append((b"connection", b"close"))
        self._keep_alive = keep_alive
        exchange.bytes_sent += len(body)
        payload = b"" if exchange.method == b"HEAD" else body
        self._write(
            encode_response_head(error.status, reason_phrase(error.status), headers) + payload
        )

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # --- connection management ------------------------------------------------------------

    def _refuse(self, exc: Http1Error) -> None:
        """Bad bytes from the client: say what was wrong, then close."""
        body = f"{exc.reason}: {exc.detail}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (REASON_HEADER, exc.reason.encode()),
            (b"connection", b"close"),
        ]
        self.proxy.refused(exc.reason, self.peer_host)
        if self._active is None:
            self._write(encode_response_head(exc.status, reason_phrase(exc.status), headers) + body)
        self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> bool:
        """For draining: close now if no request is in progress."""
        if self._active is None and not self._queue:
            self._close()
            return True
        return False

    def check_timeouts(self, now: float) -> None:
        """Called by the core's sweep: close a connection that idled or dawdled too long,
        and end a request whose response head is overdue."""
        active = self._active
        if active is not None and active.deadline and now > active.deadline:
            active.timed_out()
        if self.head_started is not None and now - self.head_started > HEADER_TIMEOUT_SECONDS:
            if self._active is None:
                error = RequestTimeout(
                    f"the request head did not arrive within {HEADER_TIMEOUT_SECONDS:g}s"
                )
                self.proxy.refused(error.reason, self.peer_host)
                body = f"{error.reason}: {error.detail}\n".encode()
                headers = [
                    (b"content-length", str(len(body)).encode()),
                    (REASON_HEADER, error.reason.encode()),
                    (b"connection", b"close"),
                ]
                self._write(encode_response_head(408, b"Request Timeout", headers) + body)
            self._close()
        elif self.idle_since is not None and now - self.idle_since > self.idle_timeout:
            self._close()
