"""Opening upstream connections, marked when the pod intercepts outbound traffic.

In transparent mode the pod's nftables send every outbound TCP connection to the proxy;
the proxy's own upstream connections must not come back to it. They carry SO_MARK
(matched by the pod's rules) — which needs CAP_NET_ADMIN, so a clear error says so.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import cast

from mycelium.identity.tls import PeerIdentityError, peer_identity
from mycelium.proxy.errors import UpstreamConnectFailed

# Not exported by Python's socket module on every build (Linux: 36).
SO_MARK = getattr(socket, "SO_MARK", 36)


def set_mark(sock: socket.socket, mark: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    except PermissionError as exc:
        raise PermissionError(
            exc.errno,
            f"setting SO_MARK {mark:#x} on the upstream socket needs CAP_NET_ADMIN "
            "(run the proxy as root or grant it that capability)",
        ) from exc


async def connect_upstream[P: asyncio.BaseProtocol](
    factory: Callable[[], P],
    host: str,
    port: int,
    mark: int | None,
    tls: ssl.SSLContext | None = None,
) -> tuple[asyncio.BaseTransport, P]:
    """`loop.create_connection`, with the socket marked first when `mark` is set, and
    TLS on top when `tls` is given (an SVID context: no host name is checked)."""
    loop = asyncio.get_running_loop()
    name = host if tls is not None else None
    if mark is None:
        return await loop.create_connection(factory, host, port, ssl=tls, server_hostname=name)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        set_mark(sock, mark)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await loop.create_connection(factory, sock=sock, ssl=tls, server_hostname=name)


def check_peer_identity(connected: asyncio.BaseTransport, expected: str, where: str) -> None:
    """After an mTLS connect: the endpoint must present `expected` (its registry
    identity; "" accepts any mesh identity). Aborts and raises otherwise."""
    transport = cast(asyncio.Transport, connected)
    try:
        found = peer_identity(transport.get_extra_info("ssl_object")).uri
    except PeerIdentityError as exc:
        transport.abort()
        raise UpstreamConnectFailed(f"{where}: {exc}") from None
    if expected and found != expected:
        transport.abort()
        raise UpstreamConnectFailed(f"{where} presented {found}, not {expected}")
