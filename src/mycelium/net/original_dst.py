"""Where a redirected connection was really going: SO_ORIGINAL_DST.

In transparent (netns pod) mode, nftables REDIRECT rules send the app's outbound TCP to
the sidecar's 15001 and peers' inbound TCP to 15006. The kernel's connection tracking
remembers the destination before the rewrite; `original_destination(sock)` asks for it
with getsockopt(SOL_IP, SO_ORIGINAL_DST) (IPv4) or (SOL_IPV6, IP6T_SO_ORIGINAL_DST).

A connection that was not redirected has no original destination of its own: the kernel
either has no conntrack entry for it (ENOENT) or answers with the socket's local address.
Both raise `NotRedirected`, because relaying such a connection "onwards" would connect
the proxy to itself.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any, Protocol

from mycelium.errors import MeshError

# linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: both are 80, at their level.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
SOCKADDR_IN_SIZE = 16  # family(2) port(2) address(4) zero(8)
SOCKADDR_IN6_SIZE = 28  # family(2) port(2) flowinfo(4) address(16) scope_id(4)
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


class AcceptedSocket(Protocol):
    """What is needed of the socket: a `socket.socket`, or what a transport's
    `get_extra_info("socket")` returns (asyncio's TransportSocket, uvloop's)."""

    @property
    def family(self) -> int: ...
    def getsockname(self) -> Any: ...
    def getpeername(self) -> Any: ...
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...


class OriginalDestinationError(MeshError):
    """The original destination of an accepted connection could not be read."""


class NotRedirected(OriginalDestinationError):
    """The connection reached the proxy directly, not through a REDIRECT rule."""


def original_destination(sock: AcceptedSocket) -> tuple[str, int]:
    """The (address, port) the client connected to before nftables redirected it.

    Raises `NotRedirected` for a connection that reached the listener directly, and
    `OriginalDestinationError` when the socket is not an IPv4/IPv6 TCP connection.
    """
    local = sock.getsockname()
    ipv4 = sock.family == socket.AF_INET or (
        sock.family == socket.AF_INET6 and ipaddress.ip_address(local[0]) in _IPV4_MAPPED
    )
    try:
        if ipv4:
            # An IPv4 connection accepted on a dual-stack socket is still tracked as IPv4.
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_SIZE)
            address, port = parse_sockaddr_in(raw)
        elif sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, SOCKADDR_IN6_SIZE)
            address, port = parse_sockaddr_in6(raw)
        else:
            raise OriginalDestinationError(
                f"a socket of family {sock.family!r} has no original destination: only "
                "TCP over IPv4 or IPv6 can be redirected"
            )
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise NotRedirected(
                _not_redirected_message(sock, "the kernel tracks no NAT for it")
            ) from exc
        raise OriginalDestinationError(
            f"reading SO_ORIGINAL_DST failed ({exc.strerror}) for {_describe(sock)}: is this an "
            "accepted TCP connection, and is the nf_conntrack module loaded?"
        ) from exc
    if _same_endpoint((address, port), local):
        raise NotRedirected(
            _not_redirected_message(sock, "its original destination is the listener itself")
        )
    return address, port


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """Decode a `struct sockaddr_in` (port and address in network byte order)."""
    if len(raw) < 8:
        raise OriginalDestinationError(f"a sockaddr_in needs 8 bytes, the kernel gave {len(raw)}")
    (family,) = struct.unpack("=H", raw[:2])  # sa_family is in host byte order
    if family != socket.AF_INET:
        raise OriginalDestinationError(f"expected an AF_INET address, got family {family}")
    port, packed = struct.unpack("!H4s", raw[2:8])
    return socket.inet_ntop(socket.AF_INET, packed), port


def parse_sockaddr_in6(raw: bytes) -> tuple[str, int]:
    """Decode a `struct sockaddr_in6` (port and address in network byte order)."""
    if len(raw) < 24:
        raise OriginalDestinationError(f"a sockaddr_in6 needs 24 bytes, the kernel gave {len(raw)}")
    (family,) = struct.unpack("=H", raw[:2])
    if family != socket.AF_INET6:
        raise OriginalDestinationError(f"expected an AF_INET6 address, got family {family}")
    port, _flowinfo, packed = struct.unpack("!HI16s", raw[2:24])
    return socket.inet_ntop(socket.AF_INET6, packed), port


def _same_endpoint(original: tuple[str, int], local: tuple[object, ...]) -> bool:
    local_address = ipaddress.ip_address(str(local[0]))
    if isinstance(local_address, ipaddress.IPv6Address) and local_address.ipv4_mapped:
        local_address = local_address.ipv4_mapped
    return (ipaddress.ip_address(original[0]), original[1]) == (local_address, local[1])


def _describe(sock: AcceptedSocket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        peer = ("?", "?")
    local = sock.getsockname()
    return f"the connection from {peer[0]}:{peer[1]} to {local[0]}:{local[1]}"


def _not_redirected_message(sock: AcceptedSocket, why: str) -> str:
    return (
        f"{_describe(sock)} was not redirected to the proxy ({why}): clients must reach it "
        "through the pod's nftables REDIRECT rules, not by connecting to the capture port; "
        "check that the interception rules are installed in this network namespace"
    )
