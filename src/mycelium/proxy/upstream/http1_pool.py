"""Upstream HTTP/1.1 connections and their per-endpoint keep-alive pools.

`UpstreamHttp1` is an `asyncio.Protocol` whose callbacks never await. The exchange
sends a request head (and body) and awaits the response head (`begin`), or takes it in a
callback (`begin_with`: no future per request); body events that arrive
before the exchange attached its sink are held and flushed on attach, so nothing is lost
when head and body come in one segment. Flow control is explicit: the sink pauses this
connection's reading while the downstream client is slow, and `wait_writable` lets a
request body wait while the upstream's socket buffer is full.

An upgrade goes on a connection of its own (`EndpointPool.connect`); after a 101 the
connection stops reading until `hand_over` gives its transport to the byte relay, and
it never returns to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from mycelium.net.dial import Dialer
from mycelium.proxy.errors import UpstreamConnectFailed, UpstreamProtocolViolation, UpstreamReset
from mycelium.proxy.protocols.http1 import (
    DataReceived,
    Http1Error,
    MessageEnded,
    ResponseParser,
    ResponseReceived,
)
from mycelium.proxy.upstream.peer_identity import check_peer_identity

# Idle keep-alive connections kept per endpoint; beyond this, released ones are closed.
MAX_IDLE_PER_ENDPOINT = 64
# An idle upstream connection is closed after this long (by the core's sweep); servers
# commonly time out idle keep-alive connections after 60 s or more, so closing first
# avoids racing their close.
IDLE_TIMEOUT_SECONDS = 30.0
# An idle mTLS connection to another sidecar costs a handshake (~2 ms of CPU on the two
# sidecars) to replace, and the serving sidecar keeps such connections longer
# (downstream.MTLS_IDLE_TIMEOUT_SECONDS): keep them longer too, closing first.
MTLS_IDLE_TIMEOUT_SECONDS = 300.0


# A tuple, not `DataReceived | MessageEnded`: that would build a union on every call.
_BODY_EVENTS = (DataReceived, MessageEnded)


class ResponseSink(Protocol):
    """Where an upstream response body goes (the downstream connection)."""

    def response_data(self, data: bytes) -> None: ...
    def response_end(self, trailers: list[tuple[bytes, bytes]]) -> None: ...
    def response_failed(self, exc: BaseException) -> None: ...
    def response_flush(self) -> None:
        """The bytes received in one read were all delivered: write what was held."""


class ResponseListener(Protocol):
    """Who takes a response head in a callback rather than awaiting it (`begin_with`)."""

    def upstream_responded(self, conn: UpstreamHttp1, response: ResponseReceived) -> None: ...
    def upstream_failed(self, conn: UpstreamHttp1, exc: BaseException) -> None: ...


class UpstreamHttp1(asyncio.Protocol):
    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.closed = False
        self.reusable = True
        self._head: asyncio.Future[ResponseReceived] | None = None
        self._listener: ResponseListener | None = None
        self._sink: ResponseSink | None = None
        self._held: list[DataReceived | MessageEnded] = []
        self._writable: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self.in_response = False
        self._close_delimited = False
        # Who we are, for the peer proxy's telemetry: one header line on this
        # connection's first request (see `telemetry.metrics.PEER_HEADER`), then b"".
        self._introduce = pool.introduction

    # --- asyncio callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except Http1Error as exc:
            self._fail(UpstreamProtocolViolation(f"the upstream sent invalid HTTP/1.1: {exc}"))
            self.abort()
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                if event.status < 200 and event.status != 101:
                    continue  # interim responses (100 Continue) are ours to absorb
                self.reusable = event.keep_alive and event.status != 101
                if event.upgrade:
                    # Not HTTP any more: what follows waits for the relay (`hand_over`).
                    self.pause_reading()
                self._close_delimited = event.framing.kind == "close"
                listener = self._listener
                if listener is not None:
                    self._listener = None
                    listener.upstream_responded(self, event)
                    continue
                head = self._head
                if head is not None and not head.done():
                    head.set_result(event)
            elif isinstance(event, _BODY_EVENTS):
                sink = self._sink
                if sink is None:
                    self._held.append(event)
                elif type(event) is DataReceived:
                    sink.response_data(event.data)
                else:
                    self._finish(event.trailers)  # type: ignore[union-attr]
        sink = self._sink
        if sink is not None:
            sink.response_flush()

    def eof_received(self) -> bool | None:
        self.reusable = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.pool.forget(self)
        listener = self._listener
        head = self._head
        if listener is not None:
            self._listener = None
            listener.upstream_failed(
                self, UpstreamReset("the upstream closed the connection before responding")
            )
        elif head is not None and not head.done():
            head.set_exception(
                UpstreamReset("the upstream closed the connection before responding")
            )
        elif self.in_response:
            if self._close_delimited:  # a response delimited by closing: that is its end
                self._finish([])
            else:
                self._fail(UpstreamReset("the upstream closed the connection mid-response"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # --- used by the exchange -----------------------------------------------------------

    def begin(self, method: bytes, head: bytes) -> asyncio.Future[ResponseReceived]:
        """Send a request head; the future resolves with the response head."""
        assert self.transport is not None
        self.parser.expect(method)
        self._sink = None
        self._held = []
        self.in_response = True
        self._head = asyncio.get_running_loop().create_future()
        if self._introduce:
            head = self._introduced(head)
        self.transport.write(head)
        return self._head

    def begin_with(self, method: bytes, head: bytes, listener: ResponseListener) -> None:
        """Send a request head; `listener` gets the response head in a callback."""
        assert self.transport is not None
        self.parser.expect(method)
        self._sink = None
        if self._held:  # (nearly always empty: `attach` took it)
            self._held = []
        self.in_response = True
        self._head = None
        self._listener = listener
        if self._introduce:
            head = self._introduced(head)
        self.transport.write(head)

    def _introduced(self, head: bytes) -> bytes:
        """`head` (ending in the blank line) with our introduction before that line."""
        line, self._introduce = self._introduce, b""
        return head[:-2] + line + b"\r\n"

    def detach_listener(self) -> None:
        """The listener gave up on this response (a timeout): it will not be called."""
        self._listener = None

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await self._writable

    def when_writable(self, callback: Callable[[], object]) -> None:
        """Call `callback` once the transport takes writes again (now, if it does)."""
        writable = self._writable
        if writable is None:
            callback()
        else:
            writable.add_done_callback(lambda _: callback())

    def attach(self, sink: ResponseSink) -> None:
        """Send the response body to `sink`, starting with anything already received."""
        self._sink = sink
        held = self._held
        if held:  # the synchronous path attaches before the body is read: none held
            self._held = []
            for event in held:
                self._deliver(event)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def hand_over(self) -> tuple[asyncio.Transport, bytes] | None:
        """Give up the connection after a 101: its transport (reading paused) and the
        bytes read past the response head, or None if it is already gone. The pool
        forgets it; this protocol gets no more callbacks once the new one is set."""
        transport = self.transport
        if transport is None or self.closed or transport.is_closing():
            return None
        self.closed = True
        self.reusable = False
        self.in_response = False
        self._sink = None
        self._head = None
        self.pool.forget(self)
        return transport, self.parser.take_remaining()

    # --- internals ----------------------------------------------------------------------

    def _deliver(self, event: DataReceived | MessageEnded) -> None:
        assert self._sink is not None
        if isinstance(event, DataReceived):
            self._sink.response_data(event.data)
        else:
            self._finish(event.trailers)

    def _finish(self, trailers: list[tuple[bytes, bytes]]) -> None:
        sink, self._sink = self._sink, None
        self.in_response = False
        self._head = None
        if sink is not None:
            sink.response_end(trailers)
        self.pool.release(self)

    def _fail(self, exc: BaseException) -> None:
        listener = self._listener
        if listener is not None:
            self._listener = None
            listener.upstream_failed(self, exc)
            return
        head = self._head
        if head is not None and not head.done():
            head.set_exception(exc)
            return
        sink, self._sink = self._sink, None
        self.in_response = False
        if sink is not None:
            sink.response_failed(exc)


class EndpointPool:
    """Keep-alive connections to one endpoint (address:port)."""

    def __init__(
        self,
        host: str,
        port: int,
        socket_mark: int | None = None,
        tls: Callable[[], ssl.SSLContext] | None = None,
        identity: str = "",
        *,
        introduction: bytes = b"",
    ) -> None:
        self.host = host
        self.port = port
        self.dialer = Dialer(mark=socket_mark)  # marked in transparent mode: see net/dial.py
        # mTLS to another proxy: the context (our current SVID) and the SPIFFE ID the
        # endpoint must present
        self.tls = tls
        self.identity = identity
        self.introduction = introduction  # a header line each new connection sends once
        self._idle: deque[UpstreamHttp1] = deque()
        self.open = 0  # connections open to this endpoint (idle or busy)
        self.last_used = time.monotonic()
        # Requests waiting for a connection, and the dials started for them. A dial
        # is not bound to the request that started it: whichever connection is ready
        # first, a new one or one a finished request releases, goes to the oldest
        # waiter (as Envoy's pools do). A handshake (mTLS: ~2 ms of CPU) then delays
        # a request only when no connection frees up sooner.
        self._waiters: deque[asyncio.Future[UpstreamHttp1]] = deque()
        self._dials: set[asyncio.Task[None]] = set()

    def take_idle(self) -> UpstreamHttp1 | None:
        """An idle keep-alive connection ready for a request, if there is one."""
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used: warmest, least likely closed
            if not conn.closed and conn.reusable:
                return conn
        return None

    async def acquire(self, connect_timeout: float) -> UpstreamHttp1:
        """An idle connection, else the first to be ready: one released by another
        request or one dialled for this wait. Raises `UpstreamConnectFailed` when a
        dial fails and no other dial in flight is left for this request."""
        self.last_used = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used: warmest, least likely closed
            if not conn.closed and conn.reusable:
                return conn
        waiter: asyncio.Future[UpstreamHttp1] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if len(self._dials) < len(self._waiters):
            dial = asyncio.get_running_loop().create_task(self._dial(connect_timeout))
            self._dials.add(dial)
            dial.add_done_callback(self._dials.discard)  # also when cancelled before it ran
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # handed over as we were cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _dial(self, connect_timeout: float) -> None:
        try:
            conn = await self.connect(connect_timeout)
        except BaseException as exc:
            self._dial_ended()
            failure = (
                exc
                if isinstance(exc, UpstreamConnectFailed)
                else UpstreamConnectFailed(f"connecting to {self.host}:{self.port}: {exc!r}")
            )
            # The oldest waiter hears of it, unless the dials still in flight are at
            # least as many as the waiters: one of them will serve it.
            if len(self._waiters) > len(self._dials):
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_exception(failure)
                        break
            if not isinstance(exc, Exception):
                raise  # cancelled (the proxy is stopping)
            return
        self._dial_ended()
        # A fresh connection goes to a waiter as it is, even one the server already
        # spoiled (it spoke first, or closed): that request then fails with the reason.
        if not self._hand_to_waiter(conn):
            self.release(conn)

    def _dial_ended(self) -> None:
        """This dial no longer counts as in flight. Not left to a done-callback: a
        request arriving before asyncio runs it would wait on a dial that has already
        handed its connection to someone else, and no dial would serve it."""
        task = asyncio.current_task()
        if task is not None:
            self._dials.discard(task)

    async def connect(self, connect_timeout: float) -> UpstreamHttp1:
        """A new connection, never an idle one (an upgrade takes its connection away)."""
        self.last_used = time.monotonic()
        try:
            async with asyncio.timeout(connect_timeout):
                transport, protocol = await self.dialer.connect(
                    lambda: UpstreamHttp1(self),
                    self.host,
                    self.port,
                    tls=self.tls() if self.tls is not None else None,
                )
        except TimeoutError:
            raise UpstreamConnectFailed(
                f"connecting to {self.host}:{self.port} took longer than {connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectFailed(
                f"connecting to {self.host}:{self.port} failed: {exc.strerror or exc}"
            ) from None
        if self.tls is not None:
            check_peer_identity(transport, self.identity, f"{self.host}:{self.port}")
        self.open += 1
        return protocol

    def release(self, conn: UpstreamHttp1) -> None:
        if conn.closed:
            return
        if not conn.reusable:
            conn.abort()
            return
        if self._waiters and self._hand_to_waiter(conn):
            return
        if len(self._idle) >= MAX_IDLE_PER_ENDPOINT:
            _close(conn)
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _hand_to_waiter(self, conn: UpstreamHttp1) -> bool:
        """Give `conn` to the oldest request still waiting; False when none is."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def forget(self, conn: UpstreamHttp1) -> None:
        self.open = max(0, self.open - 1)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close_idle(self, older_than: float | None = None) -> None:
        """Close idle connections (only those idle since before `older_than`, if given).

        The deque is ordered by release time, oldest first, so the sweep stops early."""
        while self._idle and (older_than is None or self._idle[0].idle_since < older_than):
            _close(self._idle.popleft())


def _close(conn: UpstreamHttp1) -> None:
    if conn.transport is not None:
        conn.transport.close()


class PoolSet:
    """One `EndpointPool` per endpoint address, created on first use. A set made with
    `tls` speaks mTLS, each pool checking its endpoint's SPIFFE ID."""

    def __init__(
        self,
        socket_mark: int | None = None,
        tls: Callable[[], ssl.SSLContext] | None = None,
        introduction: bytes = b"",
    ) -> None:
        self._pools: dict[tuple[str, int], EndpointPool] = {}
        self._socket_mark = socket_mark
        self._tls = tls
        self._introduction = introduction

    def get(self, host: str, port: int, identity: str = "") -> EndpointPool:
        key = (host, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = EndpointPool(
                host, port, self._socket_mark, self._tls, identity, introduction=self._introduction
            )
        return pool

    def close_idle(self, older_than: float | None = None) -> None:
        for pool in self._pools.values():
            pool.close_idle(older_than)
