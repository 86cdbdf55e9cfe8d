"""The L4 relay over real loopback sockets, on asyncio's loop and on uvloop.

A `CaptureListener` stands in for the proxy's listener: it accepts a client connection
with its own protocol, optionally reads the first bytes to detect the protocol, then
hands the transport to a `TcpRelay` that dials the upstream server. Each story checks
what the client and the upstream saw, and how the relay says it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import uvloop
from tests.support.polling import eventually

from mycelium.net.errors import (
    ConnectFailed,
    ConnectTimeout,
    RelayAborted,
    RelayIdle,
    UpstreamLost,
)
from mycelium.net.relay import HIGH_WATER_BYTES, RelayResult, TcpRelay, connect_and_relay

# The proxy's own protocol detection drives the hand-over stories, as its listeners do.
from mycelium.proxy.protocols.detect import DETECTION_TIMEOUT, detect_protocol

LOCALHOST = "127.0.0.1"
MiB = 1024 * 1024
BULK_BYTES = 50 * MiB
# What the relay may hold in user space per direction: one high-water mark plus one
# read. "A few MB" is the promise; the design bound is about half a MiB.
BUFFER_BOUND = 2 * MiB
PROMPTLY = 2.0  # seconds: generous for a busy CI box, far below any timeout involved
# A story's own deadline, inside its loop: pytest-timeout's signal cannot always
# interrupt uvloop while it waits in libuv.
STORY_TIMEOUT = 60.0

type Story = Callable[[], Coroutine[Any, Any, None]]
type Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Story], None]:
    """Run a story on a fresh loop of each kind: the proxy runs on uvloop, tests on both."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run_story(story: Story) -> None:
        asyncio.run(asyncio.wait_for(story(), STORY_TIMEOUT), loop_factory=factory)

    return run_story


# --- the cast: upstream servers, the capture listener, clients -----------------------


@contextlib.asynccontextmanager
async def upstream_server(handler: Handler) -> Any:
    """A TCP server on a free loopback port; yields its port."""
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(tracked, LOCALHOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class CaptureListener:
    """Accepts clients and hands each one to a TcpRelay towards `upstream_port`.

    With `detect=True` it first reads until `detect_protocol` decides (or
    `DETECTION_TIMEOUT` passes, meaning opaque), as the proxy's listener will, and
    passes what it read as `initial_data`. With `wait_for_eof=True` it reads the whole
    client request, EOF included, before handing over.
    """

    upstream_port: int
    detect: bool = False
    wait_for_eof: bool = False
    idle_timeout: float | None = None
    connect_timeout: float = 5.0
    pass_resets: bool = False
    relays: list[TcpRelay] = field(default_factory=list)
    results: list[RelayResult] = field(default_factory=list)
    detected: list[str] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> CaptureListener:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _FirstBytes(self), LOCALHOST, 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for relay in self.relays:
            relay.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        assert self._server is not None
        self._server.close()

    def hand_over(self, transport: asyncio.Transport, initial_data: bytes, eof: bool) -> None:
        relay = TcpRelay(
            transport,
            initial_data=initial_data,
            downstream_eof=eof,
            idle_timeout=self.idle_timeout,
            pass_resets=self.pass_resets,
        )
        self.relays.append(relay)
        relay.connect(LOCALHOST, self.upstream_port, connect_timeout=self.connect_timeout)
        task = asyncio.get_running_loop().create_task(self._record(relay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, relay: TcpRelay) -> None:
        self.results.append(await relay.wait())

    async def result(self) -> RelayResult:
        """The first relay's result, once it has ended."""
        await eventually(lambda: self.results, timeout=PROMPTLY * 5, what="the relay to end")
        return self.results[0]


class _FirstBytes(asyncio.Protocol):
    """The listener's own protocol: reads the first bytes, then hands the transport over."""

    def __init__(self, listener: CaptureListener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are no subclass
        self.transport = transport
        if self.listener.detect:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(DETECTION_TIMEOUT, self.decide, "opaque")
        elif not self.listener.wait_for_eof:
            self.listener.hand_over(transport, b"", eof=False)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.listener.detect:
            detected = detect_protocol(self.buffer)
            if detected is not None:
                self.decide(detected)

    def eof_received(self) -> bool:
        if self.listener.wait_for_eof:
            assert self.transport is not None
            self.listener.hand_over(self.transport, self.buffer, eof=True)
        return True  # the relay still has to write the answer

    def decide(self, protocol: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        assert self.transport is not None
        self.listener.detected.append(protocol)
        self.listener.hand_over(self.transport, self.buffer, eof=False)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until EOF; a reset after the data counts as the end, too."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(64 * 1024):
            chunks.append(chunk)
    return b"".join(chunks)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0, then abort."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def unused_port() -> int:
    """A loopback port with nothing listening on it (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


# --- handlers of the upstream servers --------------------------------------------------


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(64 * 1024):
        writer.write(data)
        await writer.drain()
    writer.write_eof()


async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.0-style server: reads the whole request, then answers and closes."""
    request = await read_all(reader)
    writer.write(b"got %d bytes: " % len(request) + request[-16:])
    await writer.drain()


# --- stories -----------------------------------------------------------------------------


def test_bytes_go_both_ways_and_are_counted(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        async with upstream_server(echo) as port, CaptureListener(port) as listener:
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            for line in (b"hello\n", b"through the mesh\n"):
                writer.write(line)
                assert await reader.readexactly(len(line)) == line
            writer.write_eof()
            assert await read_all(reader) == b""
            writer.close()
            result = await listener.result()
        assert result.ended_by == "completed"
        assert result.error is None
        assert result.bytes_to_upstream == result.bytes_to_downstream == 23
        assert result.upstream_address == (LOCALHOST, port)

    run(story)


def test_half_close_lets_the_server_answer_after_the_clients_eof(
    run: Callable[[Story], None],
) -> None:
    async def story() -> None:
        async with upstream_server(answer_after_eof) as port, CaptureListener(port) as listener:
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            writer.write(b"a request that ends with EOF")
            writer.write_eof()  # shutdown(SHUT_WR): the client still reads
            assert await read_all(reader) == b"got 28 bytes: at ends with EOF"
            writer.close()
            result = await listener.result()
        assert result.ended_by == "completed"
        assert (result.bytes_to_upstream, result.bytes_to_downstream) == (28, 30)

    run(story)


def test_the_client_keeps_sending_after_the_server_half_closes(
    run: Callable[[Story], None],
) -> None:
    received = asyncio.Queue[bytes]()

    async def says_bye_then_listens(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"bye")
        writer.write_eof()
        received.put_nowait(await read_all(reader))

    async def story() -> None:
        async with upstream_server(says_bye_then_listens) as port, CaptureListener(port) as lsn:
            reader, writer = await asyncio.open_connection(LOCALHOST, lsn.port)
            assert await read_all(reader) == b"bye"
            writer.write(b"late words")
            writer.write_eof()
            assert await asyncio.wait_for(received.get(), PROMPTLY) == b"late words"
            writer.close()
            result = await lsn.result()
        assert result.ended_by == "completed"

    run(story)


def test_a_server_that_speaks_first_is_heard_at_once(run: Callable[[Story], None]) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 smtp.example ESMTP ready\r\n")
        await writer.drain()
        await read_all(reader)

    async def story() -> None:
        async with upstream_server(banner) as port, CaptureListener(port) as listener:
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            # the client says nothing: the banner must come anyway, well before any
            # detection timeout would have passed
            line = await asyncio.wait_for(reader.readline(), DETECTION_TIMEOUT)
            assert line == b"220 smtp.example ESMTP ready\r\n"
            writer.close()

    run(story)


def test_detection_hands_over_the_bytes_it_read(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        async with upstream_server(echo) as port, CaptureListener(port, detect=True) as lsn:
            reader, writer = await asyncio.open_connection(LOCALHOST, lsn.port)
            writer.write(b"GE")  # not enough to decide: the listener keeps reading
            request = b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n"
            writer.write(request[2:])
            assert await reader.readexactly(len(request)) == request
            writer.write_eof()
            assert await read_all(reader) == b""
            writer.close()
            result = await lsn.result()
        assert lsn.detected == ["http1"]
        assert result.bytes_to_upstream == len(request)

    run(story)


def test_a_silent_client_is_relayed_as_opaque_after_the_detection_timeout(
    run: Callable[[Story], None],
) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK IMAP4rev1 ready\r\n")
        await read_all(reader)

    async def story() -> None:
        async with upstream_server(banner) as port, CaptureListener(port, detect=True) as lsn:
            loop = asyncio.get_running_loop()
            started = loop.time()
            reader, writer = await asyncio.open_connection(LOCALHOST, lsn.port)
            line = await asyncio.wait_for(reader.readline(), DETECTION_TIMEOUT + PROMPTLY)
            waited = loop.time() - started
            writer.close()
        assert line == b"* OK IMAP4rev1 ready\r\n"
        assert lsn.detected == ["opaque"]
        assert waited >= DETECTION_TIMEOUT * 0.9  # the banner waited for detection, no more

    run(story)


def test_a_request_already_ended_by_eof_is_relayed_with_its_eof(
    run: Callable[[Story], None],
) -> None:
    async def story() -> None:
        async with (
            upstream_server(answer_after_eof) as port,
            CaptureListener(port, wait_for_eof=True) as listener,
        ):
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            writer.write(b"short request")
            writer.write_eof()
            assert await read_all(reader) == b"got 13 bytes: short request"
            writer.close()
            result = await listener.result()
        assert result.ended_by == "completed"

    run(story)


@pytest.mark.parametrize("slow_end", ["upstream", "client"])
def test_fifty_megabytes_to_a_slow_reader_keep_the_relay_buffer_bounded(
    run: Callable[[Story], None], slow_end: str
) -> None:
    """The sender is fast and the reader slow: flow control, not memory, absorbs it."""
    chunk = os.urandom(MiB)
    sent = hashlib.sha256()
    for _ in range(BULK_BYTES // MiB):
        sent.update(chunk)
    upstream_got = asyncio.Queue[tuple[int, str]]()

    async def send_bulk(writer: asyncio.StreamWriter) -> None:
        for _ in range(BULK_BYTES // MiB):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()

    async def read_slowly(reader: asyncio.StreamReader) -> tuple[int, str]:
        # small reads, yielding to the loop between them: much slower than the sender's
        # megabyte writes, so buffers fill up on the way
        got = hashlib.sha256()
        total = 0
        while data := await reader.read(8 * 1024):
            got.update(data)
            total += len(data)
            await asyncio.sleep(0)
        return total, got.hexdigest()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if slow_end == "upstream":
            upstream_got.put_nowait(await read_slowly(reader))
        else:
            await send_bulk(writer)
            await read_all(reader)

    async def sample_buffers(relays: list[TcpRelay], peaks: list[int]) -> None:
        while not relays or not relays[0].done:
            if relays:
                peaks.append(relays[0].buffered_bytes)
            await asyncio.sleep(0.001)  # a sampling period, not a wait for a condition

    async def story() -> None:
        async with upstream_server(upstream) as port, CaptureListener(port) as listener:
            peaks: list[int] = []
            sampler = asyncio.create_task(sample_buffers(listener.relays, peaks))
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            if slow_end == "upstream":
                await send_bulk(writer)
                total, digest = await asyncio.wait_for(upstream_got.get(), 60)
                await read_all(reader)
            else:
                total, digest = await read_slowly(reader)
                writer.write_eof()
            writer.close()
            result = await listener.result()
            await sampler
        assert (total, digest) == (BULK_BYTES, sent.hexdigest())
        moved = result.bytes_to_upstream if slow_end == "upstream" else result.bytes_to_downstream
        assert moved == BULK_BYTES
        # flow control engaged (the buffer reached the mark) and held the line
        assert HIGH_WATER_BYTES <= result.peak_buffered_bytes < BUFFER_BOUND
        assert max(peaks) < BUFFER_BOUND

    run(story)


def test_a_refused_upstream_resets_the_client_promptly(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        port = unused_port()
        async with CaptureListener(port) as listener:
            loop = asyncio.get_running_loop()
            started = loop.time()
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            writer.write(b"anyone there?")
            assert await asyncio.wait_for(read_all(reader), PROMPTLY) == b""
            closed_after = loop.time() - started
            writer.close()
            result = await listener.result()
        assert closed_after < PROMPTLY
        assert result.ended_by == "connect_failed"
        assert isinstance(result.error, ConnectFailed)
        assert f"{LOCALHOST}:{port}" in str(result.error)
        assert "refused" in str(result.error)
        assert (result.bytes_to_upstream, result.bytes_to_downstream) == (0, 0)

    run(story)


def test_an_upstream_that_never_accepts_times_out(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        # A listener that never accepts, its backlog already full: the kernel drops
        # further SYNs, so a connect hangs until the relay's connect timeout.
        with socket.socket() as full:
            full.bind((LOCALHOST, 0))
            full.listen(0)
            port = full.getsockname()[1]
            fillers = [socket.socket() for _ in range(2)]
            for filler in fillers:  # non-blocking: the second one already hangs
                filler.setblocking(False)
                filler.connect_ex((LOCALHOST, port))
            try:
                async with CaptureListener(port, connect_timeout=0.3) as listener:
                    reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
                    assert await asyncio.wait_for(read_all(reader), PROMPTLY) == b""
                    writer.close()
                    result = await listener.result()
            finally:
                for filler in fillers:
                    filler.close()
        assert result.ended_by == "connect_timeout"
        assert isinstance(result.error, ConnectTimeout)
        assert "0.3 s" in str(result.error)

    run(story)


def test_an_idle_connection_is_closed_on_both_sides(run: Callable[[Story], None]) -> None:
    upstream_saw_eof = asyncio.Event()

    async def echo_then_note_eof(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await echo(reader, writer)
        upstream_saw_eof.set()

    async def story() -> None:
        idle = 0.3
        async with (
            upstream_server(echo_then_note_eof) as port,
            CaptureListener(port, idle_timeout=idle) as listener,
        ):
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            # traffic paced below the idle timeout keeps the connection open...
            for _ in range(4):
                await asyncio.sleep(idle / 3)  # pacing the client, not waiting on anything
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            assert not listener.results
            # ...and silence closes it
            quiet_since = loop.time()
            assert await asyncio.wait_for(read_all(reader), idle + PROMPTLY) == b""
            quiet_for = loop.time() - quiet_since
            await asyncio.wait_for(upstream_saw_eof.wait(), PROMPTLY)
            writer.close()
            result = await listener.result()
        assert quiet_for >= idle * 0.8  # the relay's clock started at its last byte
        assert result.ended_by == "idle_timeout"
        assert isinstance(result.error, RelayIdle)
        assert result.bytes_to_upstream == result.bytes_to_downstream == 16

    run(story)


def test_abort_resets_both_connections(run: Callable[[Story], None]) -> None:
    upstream_ended = asyncio.Event()

    async def echo_until_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionResetError):
            await echo(reader, writer)
        upstream_ended.set()

    async def story() -> None:
        async with upstream_server(echo_until_gone) as port, CaptureListener(port) as listener:
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            listener.relays[0].abort()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), PROMPTLY)
            await asyncio.wait_for(upstream_ended.wait(), PROMPTLY)
            writer.close()
            result = await listener.result()
        assert result.ended_by == "aborted"
        assert isinstance(result.error, RelayAborted)

    run(story)


def test_an_upstream_reset_still_delivers_what_it_sent(run: Callable[[Story], None]) -> None:
    async def answer_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        writer.write(b"partial answer")
        await writer.drain()
        reset(writer)

    async def story() -> None:
        async with upstream_server(answer_then_reset) as port, CaptureListener(port) as lsn:
            reader, writer = await asyncio.open_connection(LOCALHOST, lsn.port)
            writer.write(b"hello")
            assert await asyncio.wait_for(read_all(reader), PROMPTLY) == b"partial answer"
            writer.close()
            result = await lsn.result()
        assert result.ended_by == "upstream_lost"
        assert isinstance(result.error, UpstreamLost)

    run(story)


def test_passing_resets_an_upstream_reset_reaches_the_client_as_one(
    run: Callable[[Story], None],
) -> None:
    async def reset_after_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        reset(writer)

    async def story() -> None:
        async with (
            upstream_server(reset_after_hello) as port,
            CaptureListener(port, pass_resets=True) as listener,
        ):
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            writer.write(b"hello")
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), PROMPTLY)
            writer.close()
            result = await listener.result()
        assert result.ended_by == "upstream_lost"
        assert isinstance(result.error, UpstreamLost)

    run(story)


def test_passing_resets_a_client_reset_reaches_the_upstream_as_one(
    run: Callable[[Story], None],
) -> None:
    upstream_saw: asyncio.Queue[str] = asyncio.Queue()

    async def note_how_it_ended(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ready")
        try:
            await reader.read()
        except ConnectionResetError:
            upstream_saw.put_nowait("reset")
        else:
            upstream_saw.put_nowait("eof")

    async def story() -> None:
        async with (
            upstream_server(note_how_it_ended) as port,
            CaptureListener(port, pass_resets=True) as listener,
        ):
            reader, writer = await asyncio.open_connection(LOCALHOST, listener.port)
            assert await reader.readexactly(5) == b"ready"
            reset(writer)
            assert await asyncio.wait_for(upstream_saw.get(), PROMPTLY) == "reset"
            result = await listener.result()
        assert result.ended_by == "downstream_lost"

    run(story)


@contextlib.asynccontextmanager
async def accepted_client() -> Any:
    """A client connected to a bare listening socket; yields its reader and writer, and
    the socket accepted for it (what a listener would hand to `connect_and_relay`)."""
    loop = asyncio.get_running_loop()
    with socket.socket() as capture:
        capture.bind((LOCALHOST, 0))
        capture.listen()
        capture.setblocking(False)
        reader, writer = await asyncio.open_connection(*capture.getsockname())
        accepted, _ = await loop.sock_accept(capture)
        yield reader, writer, accepted


def test_connect_and_relay_takes_an_accepted_socket(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        async with (
            upstream_server(answer_after_eof) as port,
            accepted_client() as (reader, writer, accepted),
        ):
            relaying = asyncio.create_task(
                connect_and_relay(
                    accepted,
                    LOCALHOST,
                    port,
                    initial_data=b"(peeked) ",
                    connect_timeout=PROMPTLY,
                )
            )
            writer.write(b"rest")
            writer.write_eof()
            assert await read_all(reader) == b"got 13 bytes: (peeked) rest"
            writer.close()
            result = await asyncio.wait_for(relaying, PROMPTLY)
        assert result.ended_by == "completed"
        assert result.bytes_to_upstream == 13

    run(story)


def test_cancelling_connect_and_relay_aborts_it(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        async with (
            upstream_server(echo) as port,
            accepted_client() as (reader, writer, accepted),
        ):
            relaying = asyncio.create_task(connect_and_relay(accepted, LOCALHOST, port))
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
            relaying.cancel()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(reader.read(1), PROMPTLY)
            writer.close()
            with pytest.raises(asyncio.CancelledError):
                await relaying

    run(story)


def test_attach_upstream_pairs_two_open_connections(run: Callable[[Story], None]) -> None:
    async def story() -> None:
        loop = asyncio.get_running_loop()
        async with upstream_server(echo) as port:
            # an upstream connection opened beforehand, as a pool or a tunnel would hold it
            upstream, _ = await loop.create_connection(asyncio.Protocol, LOCALHOST, port)
            handed: asyncio.Future[TcpRelay] = loop.create_future()

            class HandOver(asyncio.Protocol):
                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    relay = TcpRelay(cast(asyncio.Transport, transport))
                    relay.attach_upstream(upstream)
                    handed.set_result(relay)

            server = await loop.create_server(HandOver, LOCALHOST, 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            message = b"over a pooled connection"
            writer.write(message)
            assert await reader.readexactly(len(message)) == message
            writer.write_eof()
            assert await read_all(reader) == b""
            writer.close()
            result = await asyncio.wait_for((await handed).wait(), PROMPTLY)
            server.close()
        assert result.ended_by == "completed"
        assert result.upstream_address == (LOCALHOST, port)

    run(story)
