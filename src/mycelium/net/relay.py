"""The TCP relay: move bytes between a client connection and its upstream, both ways.

The one relay under every user: the proxy's TCP services and upgraded connections, the
runtime's port forwards, the ztunnel to come. A listener accepts a connection with its
own protocol (which may read the first bytes to detect the protocol), then hands the
transport over: `TcpRelay(transport, initial_data=...)` takes it (`set_protocol`),
holds its reading while the upstream connects (through a `Dialer`, and TLS when asked),
forwards the bytes already read, and then relays until both directions have ended.
`connect_and_relay()` does all of that in one await and returns a `RelayResult`.

Invariants:
- Backpressure, uvicorn-style: when one side's write buffer rises above the high-water
  mark (its transport calls `pause_writing`), reading from the other side is paused
  until the buffer drains below the low-water mark (`resume_writing`). The relay holds at
  most one high-water mark plus one read (256 KiB) per direction, however slow a peer.
- Half-close: EOF from one side becomes `write_eof()` on the other, and the opposite
  direction keeps flowing until it ends too; then both transports close.
- The relay ends once both transports are closed, for exactly one reason (`RelayEnd`);
  byte counts are final by then. An error on one side closes the other gracefully so
  that bytes already relayed are still delivered, or, with `pass_resets=True` (a port
  forward, which must look like the connection it stands for), resets it: a reset
  travels as a reset. `abort()`, an idle timeout with bytes stuck in a buffer, and a
  failed upstream connect reset (RST), so that the peer cannot mistake them for a
  clean end.
- Callbacks never await: per chunk, one `write` to the other side and nothing else.
  The only task is the upstream connect, tracked and cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Literal, cast

from mycelium.errors import MeshError
from mycelium.net.dial import PLAIN, Dialer
from mycelium.net.errors import (
    ConnectFailed,
    ConnectTimeout,
    DownstreamLost,
    NamespaceError,
    RelayAborted,
    RelayIdle,
    TlsRefused,
    UpstreamLost,
)
from mycelium.net.tls_layer import TlsLayer
from mycelium.net.tls_session import TlsSession

# Write-buffer marks per transport. The kernel's socket buffers (megabytes once TCP
# autotuning has grown them) do the bulk buffering; user space only has to keep the
# next write ready while the kernel drains, so a few reads' worth suffices. 256 KiB is
# one full read of asyncio or uvloop: the relay rarely pauses on a fast path, and the
# worst case per connection stays near 512 KiB in each direction.
HIGH_WATER_BYTES = 256 * 1024
LOW_WATER_BYTES = 64 * 1024

# Istio's default TCP connect timeout; a mesh-local upstream answers in milliseconds, so
# reaching it means the endpoint is gone rather than slow.
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds

# The counters an upstream TLS layer keeps: `mtls_upstream_connections`, and
# `mtls_upstream_refused_<reason>` (the relay originates TLS only towards peer proxies).
UPSTREAM_TLS_COUNTER_PREFIX = "mtls_upstream"


type RelayEnd = Literal[
    "completed",  # both directions ended with EOF (or the relay finished closing)
    "idle_timeout",  # no byte moved either way for `idle_timeout` seconds
    "aborted",  # abort() was called
    "downstream_lost",  # the client's connection failed or was closed under the relay
    "upstream_lost",  # the upstream's connection failed (reset, broken pipe) or closed
    "connect_failed",  # the upstream refused or could not be reached
    "connect_timeout",  # the upstream did not accept within `connect_timeout`
]
type Role = Literal["downstream", "upstream"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayResult:
    """How a relay ended and what it moved; for telemetry and the access log."""

    ended_by: RelayEnd
    bytes_to_upstream: int  # read from the client (including initial_data), sent upstream
    bytes_to_downstream: int  # read from the upstream, sent to the client
    duration: float  # seconds, from hand-over until both transports closed
    # The largest write buffer seen when flow control engaged (it only measures then);
    # 0 means no buffer ever reached the high-water mark.
    peak_buffered_bytes: int
    upstream_address: tuple[str, int] | None  # None if no upstream connection was made
    error: MeshError | None = None  # why, for every end but "completed"


class _Side(asyncio.Protocol):
    """One connection of the pair: forwards what it reads to its peer's transport."""

    __slots__ = (
        "_relay",
        "bytes_read",
        "held",
        "lost",
        "peak_buffered",
        "peer",
        "pending",
        "read_ended",
        "role",
        "transport",
        "write_blocked",
    )

    def __init__(self, relay: TcpRelay, role: Role) -> None:
        self._relay = relay
        self.role = role
        self.peer: _Side = self
        self.transport: asyncio.Transport | None = None
        self.bytes_read = 0
        # Until the relay starts (downstream, while the upstream connects) reading is
        # paused, and whatever still arrives waits here: uvloop starts reading right after
        # connection_made even if that paused it, so a pause alone cannot be trusted.
        self.held = False
        self.pending: list[bytes] = []
        self.write_blocked = False  # our write buffer is above the high-water mark
        self.read_ended = False  # this side sent EOF
        self.lost = False  # connection_lost was called (or the transport was already gone)
        self.peak_buffered = 0

    # -- asyncio.Protocol callbacks: none of them awaits --------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio's classes
        self._relay._upstream_made(self, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        if self.held:
            self._relay._hold(self, data)
            return
        self._relay.last_activity = self._relay.loop.time()
        self.peer.transport.write(data)  # type: ignore[union-attr]  # set once not held

    def eof_received(self) -> bool:
        if not self.read_ended:
            self.read_ended = True
            if not self.held:  # else passed on when the relay starts
                self._relay._read_ended(self)
        return True  # keep the transport open: the other direction may still be flowing

    def pause_writing(self) -> None:
        transport = self.transport
        if transport is not None:
            self.peak_buffered = max(self.peak_buffered, transport.get_write_buffer_size())
        self.write_blocked = True
        self._relay._update_reading(self.peer)

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._relay.last_activity = self._relay.loop.time()  # draining counts as progress
        self._relay._update_reading(self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost:
            self.lost = True
            self._relay._side_lost(self, exc)


class TcpRelay:
    """Relays one client connection to one upstream connection, both ways.

    Take over a client transport, then either `connect(host, port)` to dial the
    upstream, or `attach_upstream(transport)` for one that is already connected; await
    `wait()` for the `RelayResult`. `abort()` ends it at any time.

    A listener that read `initial_data` during detection passes it here, and
    `downstream_eof=True` if the client had already half-closed (its protocol must have
    returned True from `eof_received` to keep the transport open). `pass_resets=True`
    resets one side when the other was reset, rather than closing it after its buffer.
    """

    def __init__(
        self,
        downstream: asyncio.Transport,
        *,
        initial_data: bytes = b"",
        downstream_eof: bool = False,
        idle_timeout: float | None = None,
        high_water: int = HIGH_WATER_BYTES,
        low_water: int = LOW_WATER_BYTES,
        pass_resets: bool = False,
    ) -> None:
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be positive or None, not {idle_timeout}")
        # timeouts
        self.loop = asyncio.get_running_loop()
        self.idle_timeout = idle_timeout
        self.last_activity = self.loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        # connections
        self._high_water = high_water
        self._low_water = low_water
        self._pass_resets = pass_resets
        self._down = _Side(self, "downstream")
        self._up = _Side(self, "upstream")
        self._down.peer, self._up.peer = self._up, self._down
        self._initial_data = initial_data
        self._downstream_eof = downstream_eof
        self._connect_task: asyncio.Task[None] | None = None
        self._upstream_address: tuple[str, int] | None = None
        # outcome
        self._started_at = self.loop.time()
        self._ended_by: RelayEnd | None = None
        self._error: MeshError | None = None
        self._finished: asyncio.Future[RelayResult] = self.loop.create_future()
        self._take_over_downstream(downstream)

    # -- public ------------------------------------------------------------------------

    @property
    def bytes_to_upstream(self) -> int:
        """Bytes read from the client, `initial_data` included, and handed upstream."""
        return self._down.bytes_read + len(self._initial_data)

    @property
    def bytes_to_downstream(self) -> int:
        return self._up.bytes_read

    @property
    def buffered_bytes(self) -> int:
        """Bytes the relay holds right now in both transports' write buffers."""
        return sum(
            side.transport.get_write_buffer_size()
            for side in (self._down, self._up)
            if side.transport is not None and not side.lost
        )

    @property
    def done(self) -> bool:
        return self._finished.done()

    def connect(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        dialer: Dialer = PLAIN,
        tls: TlsSession | None = None,
        counters: MutableMapping[str, int] | None = None,
    ) -> None:
        """Start dialling the upstream with `dialer`; relaying starts once it accepts.

        `tls` (a client-side session, whose peer check says whom to accept) wraps the
        upstream in TLS that half-closes; the handshake counts towards the connect
        timeout, and `counters` get `mtls_upstream_*`.
        A failure ends the relay ("connect_failed" or "connect_timeout") and resets the
        client connection.
        """
        if self._connect_task is not None or self._up.transport is not None:
            raise RuntimeError("this relay already has an upstream")
        tls_with = None if tls is None else (tls, counters)
        task = self.loop.create_task(self._connect(host, port, connect_timeout, dialer, tls_with))
        self._connect_task = task
        task.add_done_callback(self._connect_done)

    def attach_upstream(self, upstream: asyncio.Transport) -> None:
        """Relay to an upstream connection that is already established.

        Whatever its previous protocol read and did not forward is lost: hand it over
        before it reads, or with its reading paused.
        """
        if self._connect_task is not None or self._up.transport is not None:
            raise RuntimeError("this relay already has an upstream")
        upstream.set_protocol(self._up)
        self._upstream_made(self._up, upstream)
        if upstream.is_closing():
            self._up.connection_lost(None)

    async def wait(self) -> RelayResult:
        """The result, once both connections are closed. Cancelling the waiter does not
        stop the relay: call `abort()` for that."""
        return await asyncio.shield(self._finished)

    def abort(self) -> None:
        """End the relay now: reset both connections, stop a connect in progress."""
        self._end("aborted", RelayAborted("the relay was aborted by the proxy"))
        if self._connect_task is not None:
            self._connect_task.cancel()
        for side in (self._down, self._up):
            if side.transport is not None and not side.lost:
                _reset(side.transport)
        self._maybe_finish()

    # -- hand-over and connect ----------------------------------------------------------

    def _take_over_downstream(self, transport: asyncio.Transport) -> None:
        side = self._down
        side.transport = transport
        side.held = True  # no reading until the upstream is there to write to
        if transport.is_closing():
            # closed before the hand-over: its connection_lost went to the old protocol
            side.lost = True
            self._end("downstream_lost", DownstreamLost("the client closed before relaying began"))
            self._maybe_finish()
            return
        if transport.is_reading():
            transport.pause_reading()
        transport.set_protocol(side)
        transport.set_write_buffer_limits(high=self._high_water, low=self._low_water)

    async def _connect(
        self,
        host: str,
        port: int,
        connect_timeout: float,
        dialer: Dialer,
        tls: tuple[TlsSession, MutableMapping[str, int] | None] | None,
    ) -> None:
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(connect_timeout):
                sock = await dialer.dial(host, port)
                peer = sock.getpeername()
                self._upstream_address = (str(peer[0]), int(peer[1]))
                if tls is None:
                    try:
                        await self.loop.create_connection(lambda: self._up, sock=sock)
                    except BaseException:
                        sock.close()
                        raise
                else:
                    await self._handshake(sock, *tls)
        except TlsRefused as exc:
            self._fail_connect(
                "connect_failed",
                ConnectFailed(f"TLS with the upstream {where} failed ({exc.reason}): {exc.detail}"),
            )
        except NamespaceError as exc:
            self._fail_connect(
                "connect_failed", ConnectFailed(f"connecting to the upstream {where}: {exc}")
            )
        except TimeoutError:
            self._fail_connect(
                "connect_timeout",
                ConnectTimeout(
                    f"the upstream {where} did not accept a connection within "
                    f"{connect_timeout} s: check that the endpoint is up and reachable"
                ),
            )
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            self._fail_connect(
                "connect_failed",
                ConnectFailed(
                    f"connecting to the upstream {where} failed: {why}; check that the "
                    "endpoint is up and listens on that port"
                ),
            )

    async def _handshake(
        self,
        sock: socket.socket,
        session: TlsSession,
        counters: MutableMapping[str, int] | None,
    ) -> None:
        layer = TlsLayer(
            session, lambda: self._up, counters, counter_prefix=UPSTREAM_TLS_COUNTER_PREFIX
        )
        try:
            await self.loop.create_connection(lambda: layer, sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            await layer.established  # the upstream side starts relaying from inside it
        except BaseException:
            if layer.inner is None:
                layer.transport.abort()
            raise

    def _fail_connect(self, ended_by: RelayEnd, error: MeshError) -> None:
        self._end(ended_by, error)
        if self._down.transport is not None and not self._down.lost:
            _reset(self._down.transport)

    def _connect_done(self, task: asyncio.Task[None]) -> None:
        self._connect_task = None
        if not task.cancelled() and task.exception() is not None:
            # a bug, not a network failure: still end the relay rather than hang it
            self._fail_connect("connect_failed", ConnectFailed(repr(task.exception())))
        self._maybe_finish()

    def _upstream_made(self, side: _Side, transport: asyncio.Transport) -> None:
        side.transport = transport
        if self._ended_by is not None:  # aborted, or the client left, while dialling
            _reset(transport)
            return
        transport.set_write_buffer_limits(high=self._high_water, low=self._low_water)
        if self._upstream_address is None:
            peer = transport.get_extra_info("peername")
            if peer is not None:
                self._upstream_address = (str(peer[0]), int(peer[1]))
        self._start_relaying()

    def _start_relaying(self) -> None:
        up = self._up.transport
        assert up is not None
        self.last_activity = self.loop.time()
        down = self._down
        if self._initial_data:
            up.write(self._initial_data)
        for data in down.pending:
            up.write(data)
        down.pending.clear()
        down.held = False
        if self._downstream_eof:
            down.read_ended = True
        if down.read_ended:
            self._read_ended(down)
        self._update_reading(down)
        if self.idle_timeout is not None:
            self._idle_handle = self.loop.call_at(
                self.last_activity + self.idle_timeout, self._check_idle
            )

    # -- flow control, half-close, endings ------------------------------------------------

    def _update_reading(self, side: _Side) -> None:
        """Pause or resume reading `side` so that its peer's write buffer stays bounded."""
        transport = side.transport
        if transport is None or side.read_ended or side.lost or transport.is_closing():
            return  # resuming a transport after EOF would deliver EOF again
        # uvloop raises on a pause while paused (and a resume while reading) where
        # asyncio ignores it: ask the transport rather than keep a copy of its state.
        if side.held or side.peer.write_blocked:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()

    def _hold(self, side: _Side, data: bytes) -> None:
        side.pending.append(data)
        transport = side.transport
        if transport is not None and transport.is_reading():
            transport.pause_reading()  # after connection_made, uvloop honours this one

    def _read_ended(self, side: _Side) -> None:
        peer = side.peer
        target = peer.transport
        if target is not None and not peer.lost and not target.is_closing():
            if target.can_write_eof():
                target.write_eof()
            else:
                # A TLS transport cannot half-close: ending the relay is the only way to
                # pass the EOF on, at the cost of the other direction.
                self._end("completed", None)
                target.close()
        if peer.read_ended:
            self._end("completed", None)
            for each in (side, peer):
                if each.transport is not None:
                    each.transport.close()

    def _side_lost(self, side: _Side, exc: Exception | None) -> None:
        if self._ended_by is None:
            reason = exc or "the connection was closed under the relay"
            if side.role == "upstream":
                self._end("upstream_lost", UpstreamLost(f"the upstream connection ended: {reason}"))
            else:
                self._end(
                    "downstream_lost", DownstreamLost(f"the client connection ended: {reason}")
                )
        peer = side.peer
        if peer.transport is not None and not peer.lost:
            if exc is not None and self._pass_resets:
                _reset(peer.transport)
            else:
                peer.transport.close()  # flush what was already relayed, then FIN
        if self._connect_task is not None:  # the client left while the upstream was dialled
            self._connect_task.cancel()
        self._maybe_finish()

    def _check_idle(self) -> None:
        self._idle_handle = None
        assert self.idle_timeout is not None
        deadline = self.last_activity + self.idle_timeout
        if self.loop.time() < deadline:
            self._idle_handle = self.loop.call_at(deadline, self._check_idle)
            return
        self._end(
            "idle_timeout",
            RelayIdle(
                f"no byte moved either way for {self.idle_timeout} s: the connection was "
                "closed as idle (raise the idle timeout for long-quiet protocols)"
            ),
        )
        for side in (self._down, self._up):
            transport = side.transport
            if transport is None or side.lost:
                continue
            if transport.get_write_buffer_size():
                _reset(transport)  # its peer stopped reading: those bytes will never go
            else:
                transport.close()
        if not self.done:  # closing may still be flushing: check again after another period
            self._idle_handle = self.loop.call_at(
                self.loop.time() + self.idle_timeout, self._check_idle
            )

    def _end(self, ended_by: RelayEnd, error: MeshError | None) -> None:
        if self._ended_by is None:
            self._ended_by = ended_by
            self._error = error

    def _maybe_finish(self) -> None:
        if self._finished.done() or self._connect_task is not None:
            return
        if not self._down.lost or not (self._up.lost or self._up.transport is None):
            return
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        assert self._ended_by is not None
        self._finished.set_result(
            RelayResult(
                ended_by=self._ended_by,
                bytes_to_upstream=self.bytes_to_upstream if self._up.transport else 0,
                bytes_to_downstream=self.bytes_to_downstream,
                duration=self.loop.time() - self._started_at,
                peak_buffered_bytes=max(self._down.peak_buffered, self._up.peak_buffered),
                upstream_address=self._upstream_address,
                error=self._error,
            )
        )


class _HeldConnection(asyncio.Protocol):
    """Protocol of an accepted socket until the relay takes it: keeps what arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.pause_reading()  # asyncio honours it; uvloop resumes: see data_received

    def data_received(self, data: bytes) -> None:
        self.received.append(data)
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        return True


async def connect_and_relay(
    downstream: asyncio.Transport | socket.socket,
    upstream_host: str,
    upstream_port: int,
    *,
    initial_data: bytes = b"",
    downstream_eof: bool = False,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    idle_timeout: float | None = None,
    dialer: Dialer = PLAIN,
) -> RelayResult:
    """Take over the client connection, dial the upstream, relay until both sides end.

    `downstream` is a transport handed over by a listener (see `TcpRelay`) or an
    accepted socket. Never raises for network failures: a refused, unreachable or slow
    upstream ends the relay with "connect_failed" or "connect_timeout", the client
    connection is reset at once, and `RelayResult.error` says why. Cancelling the
    awaiting task aborts the relay.
    """
    if isinstance(downstream, socket.socket):
        loop = asyncio.get_running_loop()
        downstream, held = await loop.connect_accepted_socket(_HeldConnection, downstream)
        initial_data = b"".join([initial_data, *held.received])
        downstream_eof = downstream_eof or held.eof
    relay = TcpRelay(
        downstream,
        initial_data=initial_data,
        downstream_eof=downstream_eof,
        idle_timeout=idle_timeout,
    )
    if not relay.done:
        relay.connect(upstream_host, upstream_port, connect_timeout=connect_timeout, dialer=dialer)
    try:
        return await relay.wait()
    except asyncio.CancelledError:
        relay.abort()
        raise


def _reset(transport: asyncio.Transport) -> None:
    """Close with RST rather than FIN: the peer must not take this for a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
