"""Opening outbound TCP connections: the one dialer under every user.

A `Dialer` says how this process connects out, fixed once per user: SO_MARK on the
socket (in transparent mode the pod's nftables send every outbound TCP connection to
the proxy, and the proxy's own connections must not come back to it: they carry the
mark the rules exempt, which needs CAP_NET_ADMIN), a source address to bind, and a
network namespace to open the socket in (`InNamespace`: the socket belongs to that
namespace for its life, names are resolved with its view).

- `dial(host, port)` resolves `host` (an IP literal needs no resolver thread), tries
  each address in turn and returns a connected non-blocking TCP_NODELAY socket (every
  outbound connection, the relay's included), for whoever wraps
  it: the TCP relay (under its own memory-BIO TLS layer, which half-closes).
- `connect(factory, host, port, tls=...)` is `loop.create_connection` over `dial`,
  with asyncio's TLS on top when a context is given: the connection pools.

Failures are the OS's: `OSError` (refused, unreachable, permission) and
`NamespaceError`; callers translate them at their edge and bound the wait themselves
(`asyncio.timeout`), so a handshake can count towards the same deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from mycelium.net.netns import InNamespace

# Not exported by Python's socket module on every build (Linux: 36).
SO_MARK = getattr(socket, "SO_MARK", 36)

type SocketAddress = tuple[str, int] | tuple[str, int, int, int]


def set_mark(sock: socket.socket, mark: int) -> None:
    """SO_MARK `mark` on `sock`; a missing capability is an error that says so."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except PermissionError as exc:
        raise PermissionError(
            exc.errno,
            f"setting SO_MARK {mark:#x} on the upstream socket needs CAP_NET_ADMIN "
            "(run the proxy as root or grant it that capability)",
        ) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialer:
    """How to open outbound connections; the default dials plainly from here."""

    mark: int | None = None  # SO_MARK, so that interception lets the connection through
    source: str | None = None  # the local address to connect from (the kernel picks a port)
    netns: InNamespace | None = None  # open the socket in this namespace (None: our own)

    async def dial(self, host: str, port: int) -> socket.socket:
        """A connected, non-blocking socket to `host:port`: each address `host` resolves
        to is tried in turn, and the last failure raised if none accepts."""
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for family, address in await self.resolve(host, port):
            sock = await self._socket(family)
            try:
                if self.mark is not None:
                    set_mark(sock, self.mark)
                if self.source is not None:
                    sock.bind((self.source, 0))
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        assert last_error is not None  # resolve returns at least one address
        raise last_error

    async def connect[P: asyncio.BaseProtocol](
        self,
        factory: Callable[[], P],
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[asyncio.Transport, P]:
        """`loop.create_connection` over `dial`, with asyncio's TLS on top when `tls` is
        given (its server name is `server_hostname`, else `host`)."""
        sock = await self.dial(host, port)
        name = (server_hostname or host) if tls is not None else None
        try:
            transport, protocol = await asyncio.get_running_loop().create_connection(
                factory, sock=sock, ssl=tls, server_hostname=name
            )
        except BaseException:
            sock.close()
            raise
        return transport, protocol

    async def resolve(
        self, host: str, port: int
    ) -> list[tuple[socket.AddressFamily, SocketAddress]]:
        """The addresses to try for `host:port`, in the resolver's order."""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:  # the common case, an endpoint address: no resolver thread needed
            if ip.version == 4:
                return [(socket.AF_INET, (host, port))]
            return [(socket.AF_INET6, (host, port, 0, 0))]
        if self.netns is not None:  # that namespace's resolver, as its workloads see it
            infos = await self.netns.call(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        else:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        if not infos:
            raise OSError(f"{host} resolved to no address")
        return [(family, address) for family, _, _, _, address in infos]  # type: ignore[misc]

    async def _socket(self, family: socket.AddressFamily) -> socket.socket:
        if self.netns is None:
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        else:
            sock = await self.netns.call(
                socket.socket, family, socket.SOCK_STREAM, socket.IPPROTO_TCP
            )
        sock.setblocking(False)
        # No Nagle: what is written goes now. asyncio's create_connection does the same,
        # but only for a socket whose proto says TCP, and uvloop not for one handed in.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


PLAIN = Dialer()
"""Dials from this process's own namespace, unmarked, from any local address."""
