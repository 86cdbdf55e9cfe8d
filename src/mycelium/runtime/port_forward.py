"""TCP port forwards between network namespaces, for the node agent.

netns pods and the node bridge live in namespaces the host has no route into, by
design (see netns_pods.py). The node agent, an asyncio process in the host's
namespace, joins them with sockets instead: pods reach the controller through a
listener on 198.18.64.1:15012 in `mycelium-node` that connects to 127.0.0.1:15012 on
the host, and the host reaches the ingress gateway through a listener on its loopback
that connects from inside `mycelium-node`.

A `PortForward` creates its listener with one `InNamespace` (`net.netns`) and dials
each upstream from another (`net.dial.Dialer`), then hands both connections to the
net layer's `TcpRelay`: a half-close travels, a reset travels as a reset
(`pass_resets`), a full buffer stops reading from its peer (backpressure), a client is
not read from until its upstream is connected, and is reset if the upstream cannot be
reached. `stop()` closes the listener and every connection, through a drain trigger
whose watchers are the relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Self, cast

from mycelium.errors import MeshError
from mycelium.net.dial import Dialer
from mycelium.net.drain import DrainSet, DrainTrigger
from mycelium.net.errors import NamespaceError
from mycelium.net.netns import InNamespace
from mycelium.net.relay import TcpRelay

log = logging.getLogger(__name__)

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


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _listener(address: Address) -> socket.socket:
    """A listening socket (SO_REUSEADDR: a restarted agent rebinds at once)."""
    sock = socket.create_server(address, family=_family(address[0]), backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


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
        self._dialer = Dialer(netns=connect_in)
        self._connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._bound: Address | None = None
        # `stop()` is a drain that does not wait: every relay is aborted as it starts.
        self._stopping = DrainTrigger()
        self._relays: DrainSet[TcpRelay] = DrainSet(self._stopping, TcpRelay.abort)
        self._tasks: set[asyncio.Task[None]] = set()

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
        except NamespaceError as exc:
            raise PortForwardError(f"{self}: {exc}") from exc
        except OSError as exc:
            raise PortForwardError(
                f"{self}: cannot listen on {self.listen[0]}:{self.listen[1]}: {exc}; is "
                "another process using that port, or the address absent in that namespace?"
            ) from exc
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Accepted(self), sock=sock)
        except BaseException:
            sock.close()
            raise

    def _accepted(self, transport: asyncio.Transport) -> None:
        # A callable target picks per connection (a ready pod of a Deployment, in turn).
        target = self.connect() if callable(self.connect) else self.connect
        if target is None:
            log.warning("%s: nothing ready to take the connection; closing it", self)
            transport.close()
            return
        relay = TcpRelay(transport, pass_resets=True)
        if relay.done:  # the client left before the hand-over
            return
        relay.connect(*target, connect_timeout=self._connect_timeout, dialer=self._dialer)
        self._relays.add(relay)  # aborted at once if stop() has begun
        task = asyncio.get_running_loop().create_task(self._relayed(relay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relayed(self, relay: TcpRelay) -> None:
        try:
            result = await relay.wait()
        finally:
            self._relays.discard(relay)
        if result.ended_by in ("connect_failed", "connect_timeout"):
            log.warning("%s: upstream unreachable (%s); reset the client", self, result.error)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        self._stopping.start()  # aborts every relay, and any accepted from now on
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await self._stopping.released()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class _Accepted(asyncio.Protocol):
    """An accepted connection's first protocol: hands it to a relay at once."""

    def __init__(self, forward: PortForward) -> None:
        self._forward = forward

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not derive from asyncio's classes
        self._forward._accepted(cast(asyncio.Transport, transport))
