"""HTTP/2 connections to endpoints: one multiplexed (h2c) connection per endpoint, more
only when the endpoint's MAX_CONCURRENT_STREAMS is reached.

Each stream has a sink (the `Http2Exchange` that opened it) which receives the response
head, body, trailers and end, or one failure. Response bytes are acknowledged to the
endpoint only when the sink says they went on downstream (`acknowledge`), so a slow
client makes the endpoint wait instead of making the proxy buffer. Request bytes are
reported to the sink as h2 takes them (`request_data_sent`), for the same reason in the
other direction.

A GOAWAY fails the streams the endpoint says it never processed (retryable) and keeps
the others; a lost connection fails every stream (`UpstreamReset`).
"""

from __future__ import annotations

import asyncio
import operator
import ssl
from collections.abc import Callable
from functools import partial
from typing import Protocol

from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import ProtocolError

from mycelium.net.dial import Dialer
from mycelium.proxy.errors import UpstreamConnectFailed, UpstreamReset, UpstreamUnprocessed
from mycelium.proxy.protocols.http2 import (
    Fields,
    GracefulGoawayFilter,
    client_connection,
    start,
)
from mycelium.proxy.upstream.http2_channel import H2Channel
from mycelium.proxy.upstream.peer_identity import check_peer_identity

# A connection to an endpoint with no stream for this long is closed (GOAWAY): the
# HTTP/1 pool keeps idle connections 60 s too, under most servers' own idle limits.
IDLE_SECONDS = 60.0
# Idle connections are looked for by the core's once-a-second sweep.


class ResponseSink(Protocol):
    def response_headers(self, block: Fields) -> None: ...
    def response_data(self, data: bytes) -> None: ...
    def response_trailers(self, block: Fields) -> None: ...
    def response_end(self) -> None: ...
    def response_failed(self, exc: UpstreamReset) -> None: ...
    def request_data_sent(self, size: int) -> None: ...


class UpstreamHttp2(H2Channel):
    def __init__(self, key: str) -> None:
        super().__init__(client_connection())
        self.key = key  # "address:port", for messages
        self.sinks: dict[int, ResponseSink] = {}
        self.going_away = False
        self.idle_since: float | None = None  # loop time the last stream ended
        # Fields every request on this connection adds: the proxy's introduction to the
        # proxy it calls (mTLS connections only; see telemetry.metrics.PEER_HEADER).
        self.introduction: Fields = []
        self._goaway = GracefulGoawayFilter()

    # --- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        start(self.conn)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        why = f"the HTTP/2 connection to {self.key} closed" + (f" ({exc})" if exc else "")
        self._fail_streams(lambda stream_id: True, why)

    def _take_graceful_goaways(self, data: bytes) -> bytes:
        """Handle graceful GOAWAYs ourselves (see GracefulGoawayFilter); the rest for h2."""
        data, goaways = self._goaway.feed(data)
        for last in goaways:
            # Streams up to `last` are still answered; the others were never processed.
            self.going_away = True
            why = f"{self.key} sent a graceful GOAWAY (last stream {last})"
            self._fail_streams(partial(operator.lt, last), why, unprocessed=True)
        return data

    def data_received(self, data: bytes) -> None:
        data = self._take_graceful_goaways(data)
        try:
            events = self.conn.receive_data(data) if data else []
        except ProtocolError as exc:
            self.flush()  # h2 queued the GOAWAY
            self.abort()
            self._fail_streams(lambda s: True, f"{self.key} broke HTTP/2: {exc}")
            return
        sinks = self.sinks
        for event in events:
            if isinstance(event, DataReceived):
                sink = sinks.get(event.stream_id)
                padding = event.flow_controlled_length - len(event.data)
                if padding:
                    self.conn.acknowledge_received_data(padding, event.stream_id)
                if sink is None:
                    self.conn.acknowledge_received_data(len(event.data), event.stream_id)
                else:
                    sink.response_data(event.data)
            elif isinstance(event, ResponseReceived):
                sink = sinks.get(event.stream_id)
                if sink is not None:
                    sink.response_headers(list(event.headers))
            elif isinstance(event, TrailersReceived):
                sink = sinks.get(event.stream_id)
                if sink is not None:
                    sink.response_trailers(list(event.headers))
            elif isinstance(event, StreamEnded):
                sink = sinks.pop(event.stream_id, None)
                if sink is not None:
                    sink.response_end()
            elif isinstance(event, StreamReset):
                self.sends.discard(event.stream_id)
                sink = sinks.pop(event.stream_id, None)
                if sink is not None:
                    code = _code_name(event.error_code)
                    why = f"{self.key} reset the stream ({code})"
                    refused = event.error_code == ErrorCodes.REFUSED_STREAM
                    sink.response_failed(
                        UpstreamUnprocessed(why) if refused else UpstreamReset(why)
                    )
            elif isinstance(event, ConnectionTerminated):
                self.going_away = True
                # Streams above last_stream_id were never processed (RFC 9113 section
                # 6.8); on an error GOAWAY none of them will complete.
                last = event.last_stream_id or 0
                if event.error_code != ErrorCodes.NO_ERROR:
                    last = 0
                why = f"{self.key} sent GOAWAY ({_code_name(event.error_code)})"
                graceful = event.error_code == ErrorCodes.NO_ERROR
                self._fail_streams(partial(operator.lt, last), why, unprocessed=graceful)
        self.flush()
        self._note_idle()
        if self.going_away and not self.sinks and self.transport is not None:
            self.closed = True
            self.transport.close()

    # --- streams ---------------------------------------------------------------------------

    @property
    def has_capacity(self) -> bool:
        limit = self.conn.remote_settings.max_concurrent_streams
        return not (self.closed or self.going_away) and len(self.sinks) < limit

    def open_stream(self, block: Fields, sink: ResponseSink, *, end_stream: bool) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, block, end_stream=end_stream)
        self.sinks[stream_id] = sink
        self.idle_since = None
        if not end_stream:
            self.sends.open(stream_id, sink.request_data_sent)
        self.flush_soon()
        return stream_id

    def send_data(self, stream_id: int, data: bytes) -> None:
        self.sends.queue(stream_id, data)
        self.flush_soon()

    def end_request(self, stream_id: int, trailers: Fields | None) -> None:
        self.sends.end(stream_id, trailers)
        self.flush_soon()

    def cancel(self, stream_id: int) -> None:
        """The downstream no longer wants this stream."""
        self.sinks.pop(stream_id, None)
        self.reset_stream(stream_id, ErrorCodes.CANCEL)
        self._note_idle()

    def _note_idle(self) -> None:
        if not self.sinks and self.idle_since is None:
            self.idle_since = asyncio.get_running_loop().time()

    def _fail_streams(
        self, which: Callable[[int], bool], why: str, *, unprocessed: bool = False
    ) -> None:
        for stream_id in [s for s in self.sinks if which(s)]:
            sink = self.sinks.pop(stream_id)
            self.sends.discard(stream_id)
            error = UpstreamUnprocessed(why) if unprocessed else UpstreamReset(why)
            sink.response_failed(error)


class Http2Pools:
    """The proxy's HTTP/2 connections to endpoints, by endpoint."""

    def __init__(self, socket_mark: int | None = None, introduction: Fields | None = None) -> None:
        self.dialer = Dialer(mark=socket_mark)  # marked in transparent mode: see net/dial.py
        self.introduction = introduction or []  # sent on mTLS connections
        self.idle_seconds = IDLE_SECONDS
        # by (address, port, mTLS or not)
        self._conns: dict[tuple[str, int, bool], list[UpstreamHttp2]] = {}
        self._connecting: dict[tuple[str, int, bool], asyncio.Future[UpstreamHttp2]] = {}

    def connections(self) -> list[UpstreamHttp2]:
        return [c for conns in self._conns.values() for c in conns]

    async def acquire(
        self,
        address: str,
        port: int,
        connect_timeout: float,
        *,
        tls: ssl.SSLContext | None = None,
        identity: str = "",
    ) -> UpstreamHttp2:
        """A connection to `address:port` with room for one more stream; with `tls`,
        an mTLS one to an endpoint that must present `identity`."""
        key = (address, port, tls is not None)
        while True:
            conns = self._conns.get(key)
            if conns:
                conns[:] = [c for c in conns if not c.closed]
                for conn in conns:
                    if conn.has_capacity:
                        return conn
            pending = self._connecting.get(key)
            if pending is None:
                break
            # Another stream is connecting to this endpoint: share its connection.
            conn = await asyncio.shield(pending)
            if conn.has_capacity:
                return conn
        loop = asyncio.get_running_loop()
        future: asyncio.Future[UpstreamHttp2] = loop.create_future()
        self._connecting[key] = future
        endpoint = f"{address}:{port}"
        try:
            async with asyncio.timeout(connect_timeout):
                transport, conn = await self.dialer.connect(
                    lambda: UpstreamHttp2(endpoint), address, port, tls=tls
                )
            if tls is not None:
                check_peer_identity(transport, identity, endpoint)
                # Every request, as Istio sends its peer metadata: HPACK makes the
                # repeats a byte or two each.
                conn.introduction = self.introduction
        except UpstreamConnectFailed as refused:  # the endpoint is not who it should be
            future.set_exception(refused)
            future.exception()
            raise
        except (OSError, TimeoutError) as exc:
            error = UpstreamConnectFailed(
                f"cannot open an HTTP/2 connection to {endpoint}: "
                f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else 'timed out'}"
            )
            future.set_exception(error)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise error from None
        finally:
            self._connecting.pop(key, None)
        self._conns.setdefault(key, []).append(conn)
        future.set_result(conn)
        return conn

    def close_idle(self, now: float) -> None:
        for key, conns in list(self._conns.items()):
            for conn in conns:
                idle = conn.idle_since
                if idle is not None and now - idle > self.idle_seconds:
                    conn.go_away(ErrorCodes.NO_ERROR)
            kept = [c for c in conns if not c.closed]
            if kept:
                self._conns[key] = kept
            else:
                del self._conns[key]

    def close_all(self) -> None:
        for conn in self.connections():
            conn.go_away(ErrorCodes.NO_ERROR)
        self._conns.clear()


def _code_name(code: object) -> str:
    return code.name if isinstance(code, ErrorCodes) else str(code)
