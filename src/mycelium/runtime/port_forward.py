"""TCP port forwards between network namespaces, for the node agent.

netns pods and the node bridge live in namespaces the host has no route into, by
design (see netns_pods.py). The node agent, an asyncio process in the host's
namespace, joins them with sockets instead: pods reach the controller through a
listener on 198.18.64.1:15012 in `mycelium-node` that connects to 127.0.0.1:15012 on
the host, and the host reaches the ingress gateway through a listener on its loopback
that connects from inside `mycelium-node`.

- `InNamespace` runs blocking calls on one thread that entered a namespace once
  (`os.setns`). A socket belongs to the namespace it was *created* in for its whole
  life, so creating it there is enough: the event loop then uses it from any thread.
- `PortForward` creates its listener with one `InNamespace` and each upstream socket
  with another, connects with `loop.sock_connect`, then relays bytes with two
  `asyncio.Protocol`s whose callbacks never await.

Relay invariants: a half-close travels (a FIN read from one side becomes a shutdown of
the other side's write half, and the other direction keeps flowing), and the pair is
closed once both directions have ended; a reset on one side aborts the other; a side
whose write buffer fills stops reading from its peer until it drains (backpressure);
a client is not read from until its upstream is connected, and is closed if the
upstream cannot be reached. `stop()` closes the listener and every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Self

from mycelium.errors import MeshError

log = logging.getLogger(__name__)

NETNS_RUN_DIR = Path("/run/netns")
# A refused or filtered upstream should fail the client soon, not hang it; inside
# one machine a connect completes in well under a millisecond.
CONNECT_TIMEOUT_SECONDS = 10.0
# The kernel caps this at net.core.somaxconn; a burst of pods starting together all
# connect to the controller at once.
LISTEN_BACKLOG = 1024
# How long `stop()` waits for aborted connections to report their end.
STOP_TIMEOUT_SECONDS = 5.0

type Address = tuple[str, int]


class PortForwardError(MeshError):
    """A port forward could not enter a namespace or bind its listener."""


class InNamespace:
    """Runs blocking calls inside one network namespace, on a dedicated thread.

    The thread calls `os.setns` on `/run/netns/<netns>` once, before any call; with
    `netns=None` it stays in this process's namespace (the host's). Sockets created by
    `await in_ns.call(socket.socket, ...)` belong to that namespace for their whole
    life. Several forwards may share one. `close()` ends the thread."""

    def __init__(self, netns: str | None = None, *, run_dir: Path = NETNS_RUN_DIR) -> None:
        self.netns = netns
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{netns or 'host'}"
        )
        # The one worker thread runs this first; every call waits for it, so nothing
        # ever runs in the wrong namespace after a failed entry.
        self._entered: Future[None] = self._executor.submit(self._enter, run_dir)

    def _enter(self, run_dir: Path) -> None:
        if self.netns is None:
            return
        path = run_dir / self.netns
        try:
            with open(path) as handle:
                os.setns(handle.fileno(), os.CLONE_NEWNET)
        except OSError as exc:
            raise PortForwardError(
                f"cannot enter network namespace {self.netns!r} ({path}): {exc}; check that "
                "it exists (`ip netns list`) and that this process runs as root"
            ) from exc

    async def call[**P, T](self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` run inside the namespace; raises `PortForwardError` if
        the namespace could not be entered."""
        await asyncio.wrap_future(self._entered)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """End the thread (after the calls already queued)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InNamespace({self.netns or 'host'})"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _listener(address: Address) -> socket.socket:
    """A listening socket (SO_REUSEADDR: a restarted agent rebinds at once)."""
    sock = socket.create_server(address, family=_family(address[0]), backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def _unconnected(host: str) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


class RelayEnd(asyncio.Protocol):
    """One socket of a relayed connection: what it reads is written to its peer."""

    def __init__(self, relay: Relay, *, wait_for_peer: bool) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer: RelayEnd = self  # set by the relay
        self.read_ended = False  # the remote shut its write half (we read its FIN)
        self._wait_for_peer = wait_for_peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._wait_for_peer:
            transport.pause_reading()  # until the relay's `paired()`

    def data_received(self, data: bytes) -> None:
        assert self.peer.transport is not None  # a client is read only once paired
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.read_ended = True
        self.relay.read_ended(self)
        return True  # keep the socket: the other direction may still flow

    def pause_writing(self) -> None:
        # Our socket's send buffer is full: stop reading what would be written to it.
        if self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self, exc)


class Relay:
    """A client connection and its upstream, from accept until both sockets are closed."""

    def __init__(self, on_done: Callable[[Relay], None]) -> None:
        self.client = RelayEnd(self, wait_for_peer=True)
        # The upstream reads from the moment it connects: a server that speaks first
        # writes to the client, which is connected already.
        self.upstream = RelayEnd(self, wait_for_peer=False)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self._on_done = on_done
        self._lost = 0
        self._finished = False

    def paired(self) -> None:
        """The upstream is connected: start reading the client too."""
        client, upstream = self.client.transport, self.upstream.transport
        assert client is not None
        assert upstream is not None
        if client.is_closing():  # the client left while the upstream was connecting
            upstream.close()
        else:
            client.resume_reading()

    def read_ended(self, end: RelayEnd) -> None:
        peer = end.peer
        assert peer.transport is not None
        if peer.read_ended:
            self.close()  # both directions are done
        elif peer.transport.can_write_eof():
            peer.transport.write_eof()  # after what is buffered: the FIN travels

    def lost(self, end: RelayEnd, exc: Exception | None) -> None:
        other = self.upstream if end is self.client else self.client
        if other.transport is not None and not other.transport.is_closing():
            if exc is None:
                other.transport.close()  # flushes what is buffered first
            else:
                other.transport.abort()  # a reset travels as a reset
        self._lost += 1
        if not self._finished and (self._lost == 2 or other.transport is None):
            self._finished = True  # reported once, even if an upstream connects late
            self._on_done(self)

    def close(self) -> None:
        for end in (self.client, self.upstream):
            if end.transport is not None:
                end.transport.close()

    def abort(self) -> None:
        for end in (self.client, self.upstream):
            if end.transport is not None:
                end.transport.abort()


class PortForward:
    """Accepts TCP on `listen` inside `listen_in`'s namespace and relays each connection
    to `connect` (an address, or a callable that names one per connection, None for
    none), dialled from inside `connect_in`'s namespace.

        node = InNamespace("mycelium-node")
        host = InNamespace()
        forward = PortForward(("198.18.64.1", 15012), ("127.0.0.1", 15012),
                              listen_in=node, connect_in=host)
        await forward.start()   # the listener is bound when this returns
        ...
        await forward.stop()

    The `InNamespace` objects are the caller's to close (forwards may share them).
    Addresses are IP literals: a name would be resolved in some namespace's view."""

    def __init__(
        self,
        listen: Address,
        connect: Address | Callable[[], Address | None],
        *,
        listen_in: InNamespace,
        connect_in: InNamespace,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.listen = listen
        self.connect = connect
        self._listen_in = listen_in
        self._connect_in = connect_in
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._bound: Address | None = None
        self._relays: set[Relay] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def address(self) -> Address:
        """Where the listener is (was) bound: the real port when 0 was asked for."""
        assert self._bound is not None, "start() the forward first"
        return self._bound

    @property
    def connections(self) -> int:
        """Connections accepted and not yet closed."""
        return len(self._relays)

    def __repr__(self) -> str:
        target = (
            "(chosen per connection)"
            if callable(self.connect)
            else f"{self.connect[0]}:{self.connect[1]}"
        )
        return (
            f"PortForward({self.listen[0]}:{self.listen[1]} in {self._listen_in.netns or 'host'}"
            f" -> {target} in {self._connect_in.netns or 'host'})"
        )

    async def start(self) -> None:
        """Bind the listener and serve; raises `PortForwardError` if it cannot bind."""
        try:
            sock = await self._listen_in.call(_listener, self.listen)
            host, port = sock.getsockname()[:2]
            self._bound = (str(host), int(port))
        except OSError as exc:
            raise PortForwardError(
                f"{self}: cannot listen on {self.listen[0]}:{self.listen[1]}: {exc}; is "
                "another process using that port, or the address absent in that namespace?"
            ) from exc
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._accepted, sock=sock)
        except BaseException:
            sock.close()
            raise

    def _accepted(self) -> RelayEnd:
        relay = Relay(self._done)
        self._relays.add(relay)
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._dial(relay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return relay.client

    async def _dial(self, relay: Relay) -> None:
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        # A callable target picks per connection (a ready pod of a Deployment, in turn).
        target = self.connect() if callable(self.connect) else self.connect
        if target is None:
            log.warning("%s: nothing ready to take the connection; closing it", self)
            relay.close()
            return
        try:
            sock = await self._connect_in.call(_unconnected, target[0])
            async with asyncio.timeout(self._connect_timeout):
                await loop.sock_connect(sock, target)
            client = relay.client.transport
            if client is None or client.is_closing():
                sock.close()  # the client left while we dialled
                return
            await loop.create_connection(lambda: relay.upstream, sock=sock)
        except (OSError, TimeoutError, PortForwardError) as exc:
            if sock is not None:
                sock.close()
            log.warning("%s: upstream unreachable (%s); closing the client", self, exc)
            relay.close()
            return
        except asyncio.CancelledError:
            if sock is not None and relay.upstream.transport is None:
                sock.close()
            raise
        relay.paired()

    def _done(self, relay: Relay) -> None:
        self._relays.discard(relay)
        if not self._relays:
            self._idle.set()

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for relay in list(self._relays):
            relay.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await self._idle.wait()
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
