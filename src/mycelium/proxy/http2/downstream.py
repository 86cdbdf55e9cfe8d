"""The downstream side of HTTP/2 (h2c, prior knowledge): one `asyncio.Protocol` per
client connection, each stream an `Http2Exchange` task.

Callbacks never await. h2 turns bytes into events; each request block becomes a routed
exchange, and the stream's body, trailers and reset are handed to it. Responses leave
through the connection's `SendBuffer`, as the client's windows allow; when bytes leave,
the exchange acknowledges as many to the endpoint, so a slow client slows the endpoint
rather than growing the proxy.

Defences (limits in `protocols/http2.py`): at most `MAX_CONCURRENT_STREAMS` streams and
`MAX_HEADER_LIST_SIZE` per header block (h2 enforces both, CONTINUATION included); a
rapid-reset or PING/SETTINGS flood gets GOAWAY ENHANCE_YOUR_CALM. Protocol errors close
this connection only.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError

from mycelium.proxy.errors import ProxyError
from mycelium.proxy.http2.stream import Http2Exchange
from mycelium.proxy.protocols.headers import trailers_to_forward
from mycelium.proxy.protocols.http2 import (
    Fields,
    FloodGuard,
    Http2Request,
    Http2RequestError,
    is_grpc,
    local_reply_blocks,
    parse_request,
    server_connection,
    start,
)
from mycelium.proxy.router.engine import Engine
from mycelium.proxy.upstream.http2_channel import H2Channel
from mycelium.telemetry.metrics import PEER_HEADER

if TYPE_CHECKING:
    import asyncio

    from mycelium.proxy.router.roles import Role

# A connection with no stream open is closed after this long (as HTTP/1 keep-alive).
IDLE_TIMEOUT_SECONDS = 60.0
# A connection that came over mTLS is another sidecar's pooled connection: it closes its
# idle ones after http1_pool.MTLS_IDLE_TIMEOUT_SECONDS (300 s), and we must not close first.
MTLS_IDLE_TIMEOUT_SECONDS = 360.0


class BadRequest(ProxyError):
    status = 400
    reason = "bad_request"


class DownstreamHttp2(H2Channel):
    def __init__(self, proxy: Engine, role: Role) -> None:
        super().__init__(server_connection())
        self.proxy = proxy
        self.role = role
        self.peer_host = ""
        self.peer_principal: str | None = None
        self.peer_metadata: bytes | None = None  # the calling proxy's introduction
        self.idle_timeout = IDLE_TIMEOUT_SECONDS
        self.guard = FloodGuard()
        self.streams: dict[int, Http2Exchange] = {}
        self.idle_since: float | None = None
        # Draining with the last response still queued for the client's windows: GOAWAY
        # once it has left (see flush), not before, which would cut it off.
        self._go_away_when_sent = False

    # --- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""
        identity = transport.get_extra_info("peer_identity")  # set under mTLS
        self.peer_principal = identity.uri if identity is not None else None
        if identity is not None:
            self.idle_timeout = MTLS_IDLE_TIMEOUT_SECONDS
        # The core's sweep and drain call check_timeouts / close_if_idle / abort, which
        # this class has too.
        self.proxy.connections.add(self)
        self.proxy.counters["h2_connections"] += 1
        self.idle_since = time.monotonic()
        start(self.conn)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.connections.discard(self)
        streams, self.streams = self.streams, {}
        for exchange in streams.values():
            exchange.client_gone()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            # h2 queued a GOAWAY with the error's code (an oversized header block, a
            # 101st stream, a bad frame...): send it and close this connection only.
            self.proxy.refused("h2_protocol_error", self.peer_host)
            self.proxy.log.info("closing an HTTP/2 connection from %s: %s", self.peer_host, exc)
            self.flush()
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._all_gone()
            return
        now = time.monotonic()
        for event in events:
            if isinstance(event, DataReceived):
                padding = event.flow_controlled_length - len(event.data)
                if padding:
                    self.conn.acknowledge_received_data(padding, event.stream_id)
                exchange = self.streams.get(event.stream_id)
                if exchange is None:
                    self.conn.acknowledge_received_data(len(event.data), event.stream_id)
                else:
                    exchange.request_data(event.data)
            elif isinstance(event, RequestReceived):
                self._request(event.stream_id, event.headers)
            elif isinstance(event, StreamEnded):
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange.request_end()
            elif isinstance(event, TrailersReceived):
                exchange = self.streams.get(event.stream_id)
                if exchange is not None:
                    exchange.request_trailers(
                        trailers_to_forward(event.headers, self.proxy.counters)
                    )
            elif isinstance(event, StreamReset):
                self.sends.discard(event.stream_id)
                exchange = self.streams.pop(event.stream_id, None)
                if exchange is not None:
                    exchange.client_gone()
                code = self.guard.reset_received(now)
                if code is not None:
                    self._calm_down(code)
                    return
            elif isinstance(event, (PingReceived, RemoteSettingsChanged)):
                code = self.guard.control_frame_received(now, peer_reading=not self.write_paused)
                if code is not None:
                    self._calm_down(code)
                    return
            elif isinstance(event, ConnectionTerminated):
                self.flush()
                self.closed = True
                if self.transport is not None:
                    self.transport.close()
                self._all_gone()
                return
        self.flush()

    # --- streams -----------------------------------------------------------------------------

    def _request(self, stream_id: int, block: Fields) -> None:
        self.idle_since = None
        try:
            request = parse_request(block)
        except Http2RequestError as exc:
            self.proxy.refused("bad_request", self.peer_host)
            error = BadRequest(str(exc))
            self._reply(stream_id, error, grpc=is_grpc(block), head_only=False)
            return
        if self.peer_principal is not None:
            request = self._take_introduction(request)
        exchange = Http2Exchange(self.proxy, self, stream_id, request, self.role)
        self.streams[stream_id] = exchange
        self.proxy.spawn(exchange.run())

    def _take_introduction(self, request: Http2Request) -> Http2Request:
        """Over mTLS a calling proxy introduces itself on every request: keep its
        metadata for telemetry, and take it out of what the app sees."""
        for name, value in request.headers:
            if name == PEER_HEADER:
                self.peer_metadata = value
                return replace(
                    request, headers=[(n, v) for n, v in request.headers if n != PEER_HEADER]
                )
        return request

    def stream_done(self, exchange: Http2Exchange) -> None:
        if self.streams.get(exchange.stream_id) is exchange:
            del self.streams[exchange.stream_id]
        if not self.streams:
            self.idle_since = time.monotonic()
            if self.proxy.draining:
                self.close_if_idle()

    def send_response(self, exchange: Http2Exchange, block: Fields, *, end_stream: bool) -> None:
        if self.closed:
            return
        stream_id = exchange.stream_id
        self.conn.send_headers(stream_id, block, end_stream=end_stream)
        if not end_stream:
            self.sends.open(stream_id, exchange.response_sent)
        self.flush_soon()

    def send_data(self, stream_id: int, data: bytes) -> None:
        self.sends.queue(stream_id, data)
        self.flush_soon()

    def end_response(self, stream_id: int, trailers: Fields | None) -> None:
        self.sends.end(stream_id, trailers)
        self.flush_soon()

    def local_reply(self, exchange: Http2Exchange, error: ProxyError) -> int:
        """Answer a stream ourselves; returns the body bytes sent."""
        return self._reply(
            exchange.stream_id, error, grpc=exchange.grpc, head_only=exchange.method == b"HEAD"
        )

    def _reply(self, stream_id: int, error: ProxyError, *, grpc: bool, head_only: bool) -> int:
        if self.closed:
            return 0
        block, body = local_reply_blocks(
            error.status, error.reason, error.detail, grpc=grpc, retry_after=error.retry_after
        )
        if head_only:
            body = b""
        try:
            self.conn.send_headers(stream_id, block, end_stream=not body)
        except ProtocolError:
            return 0  # the stream was reset meanwhile
        if body:
            self.sends.open(stream_id)
            self.sends.queue(stream_id, body)
            self.sends.end(stream_id)
        self.flush()
        return len(body)

    # --- connection management ------------------------------------------------------------

    def _calm_down(self, code: ErrorCodes) -> None:
        self.proxy.refused(self.guard.refused, self.peer_host)
        self.go_away(code)
        self._all_gone()

    def _all_gone(self) -> None:
        streams, self.streams = self.streams, {}
        for exchange in streams.values():
            exchange.client_gone()

    def close_if_idle(self) -> bool:
        """For draining: GOAWAY now if no stream is open (else when the last one ends
        and its response has left)."""
        if not self.streams and self.sends.idle:
            self.go_away(ErrorCodes.NO_ERROR)
            return True
        self._go_away_when_sent = not self.streams
        return False

    def flush(self) -> None:
        super().flush()
        if self._go_away_when_sent and self.sends.idle and not self.streams:
            self._go_away_when_sent = False  # go_away flushes too
            self.go_away(ErrorCodes.NO_ERROR)

    def check_timeouts(self, now: float) -> None:
        """Called by the core's sweep: close a connection idle too long."""
        if self.idle_since is not None and now - self.idle_since > self.idle_timeout:
            self.go_away(ErrorCodes.NO_ERROR)
