"""TCP port forwards between network namespaces, held by the node agent.

A socket belongs to the network namespace of the thread that created it, for its whole
life. `NamespaceThread` is a thread that entered a namespace once (`os.setns`), so that
sockets it creates (and blocking checks it runs) are that namespace's. `PortForward`
listens in one namespace and, for each connection, connects from another, relaying
bytes both ways with asyncio; the host's namespace is `None`.

This is how pods reach the controller (a listener inside each pod, the controller on
the host) and how the host reaches a gateway (`hostPort`: a listener on the host's
loopback, connections made from the node namespace), without a route between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("mycelium.runtime.forward")

T = TypeVar("T")
NETNS_RUN_DIR = Path("/run/netns")
CONNECT_TIMEOUT_SECONDS = 5.0
CHUNK = 64 * 1024


class NamespaceThread:
    """Runs blocking calls on one thread inside network namespace `name` (the host's
    when `None`)."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"netns-{name or 'host'}",
            initializer=None if name is None else functools.partial(_enter, name),
        )

    async def call(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _enter(name: str) -> None:
    with open(NETNS_RUN_DIR / name) as handle:
        os.setns(handle.fileno(), os.CLONE_NEWNET)


def _listening_socket(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _client_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


class PortForward:
    """Listen on `listen` inside `listen_in`; relay each connection to what `target()`
    names at that moment (None: nobody to serve it, the connection is closed),
    connecting from inside `connect_in`."""

    def __init__(
        self,
        *,
        listen_in: NamespaceThread | None,
        listen: tuple[str, int],
        connect_in: NamespaceThread | None,
        target: Callable[[], tuple[str, int] | None],
    ) -> None:
        self.listen = listen
        self._listen_in = listen_in or NamespaceThread(None)
        self._connect_in = connect_in or NamespaceThread(None)
        self._target = target
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = await self._listen_in.call(_listening_socket, self.listen)
        self._server = await asyncio.start_server(self._accepted, sock=sock)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._relays.discard(task)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = self._target()
        if target is None:
            return
        sock = await self._connect_in.call(_client_socket)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, target), CONNECT_TIMEOUT_SECONDS
            )
        except (OSError, TimeoutError) as exc:
            sock.close()
            log.info("forward from %s: cannot reach %s:%d: %s", self.listen, *target, exc)
            return
        up_reader, up_writer = await asyncio.open_connection(sock=sock)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then half-close: the other direction goes on."""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
