"""What a TLS ClientHello offers (ALPN) and names (SNI), read from a connection's first bytes.

An opaque inbound port under PERMISSIVE PeerAuthentication receives two kinds of TLS:
the mesh's own mTLS from another sidecar, which this proxy must end, and an app's TLS
from a caller outside the mesh, which must reach the app untouched. Sidecars offer the
ALPN protocol `MESH_ALPN` (and servers select it), so the first record tells them apart
without decrypting anything. A gateway's TLS port reads the server name (RFC 6066
section 3) the same way, to pick the listener before any decryption. Sans-IO: the
listener feeds the bytes it holds.

Only the first record is read: a ClientHello larger than one record (16 KiB) is not
something OpenSSL sends, and such a hello is judged "not the mesh's" (and unnamed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mycelium.identity.alpn import MESH_ALPN

RECORD_HEADER = 5
MAX_RECORD = 16384 + 256  # a TLS record's largest length (with some room for padding)
HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01
SERVER_NAME_EXTENSION = 0
HOST_NAME = 0  # the one kind of name in a server_name list
ALPN_EXTENSION = 16

type HelloVerdict = Literal["mesh", "other"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """What a whole first record says; both empty when it is no readable ClientHello."""

    server_name: str | None
    alpn: list[bytes]


def read_client_hello(prefix: bytes) -> ClientHello | Literal["not_tls"] | None:
    """The ClientHello `prefix` opens with; "not_tls" when it opens with anything but a
    TLS handshake record; None while the first record is still incomplete."""
    if not prefix:
        return None
    if prefix[0] != HANDSHAKE_RECORD:
        return "not_tls"
    if len(prefix) < RECORD_HEADER:
        return None
    length = int.from_bytes(prefix[3:5])
    if prefix[1] != 0x03 or length > MAX_RECORD:
        return "not_tls"
    if len(prefix) < RECORD_HEADER + length:
        return None
    return _parse_hello(prefix[RECORD_HEADER : RECORD_HEADER + length])


def judge_client_hello(prefix: bytes) -> HelloVerdict | None:
    """ "mesh" if `prefix` opens with a ClientHello that offers `MESH_ALPN`, "other" for
    any other bytes (plaintext, another TLS client, a malformed hello); None while the
    first record is still incomplete."""
    hello = read_client_hello(prefix)
    if hello is None:
        return None
    if hello == "not_tls":
        return "other"
    return "mesh" if MESH_ALPN.encode() in hello.alpn else "other"


def _parse_hello(hello: bytes) -> ClientHello:
    """The server name and ALPN offer of a ClientHello handshake message (neither when
    absent or malformed)."""
    reader = _Reader(hello)
    server_name: str | None = None
    alpn: list[bytes] = []
    try:
        if reader.take(1)[0] != CLIENT_HELLO:
            return ClientHello(server_name=None, alpn=[])
        reader.skip(3)  # handshake length: the record bounds us already
        reader.skip(2 + 32)  # legacy version, random
        reader.skip(reader.number(1))  # session id
        reader.skip(reader.number(2))  # cipher suites
        reader.skip(reader.number(1))  # compression methods
        extensions = _Reader(reader.take(reader.number(2)))
        while extensions.left:
            kind = extensions.number(2)
            body = _Reader(extensions.take(extensions.number(2)))
            if kind == ALPN_EXTENSION:
                listed = _Reader(body.take(body.number(2)))
                while listed.left:
                    alpn.append(listed.take(listed.number(1)))
            elif kind == SERVER_NAME_EXTENSION:
                names = _Reader(body.take(body.number(2)))
                while names.left and server_name is None:
                    name_type = names.number(1)
                    name = names.take(names.number(2))
                    if name_type == HOST_NAME:
                        server_name = name.decode("ascii", "replace").lower()
    except _Truncated:
        return ClientHello(server_name=None, alpn=[])
    return ClientHello(server_name=server_name, alpn=alpn)


class _Truncated(Exception):
    pass


class _Reader:
    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def left(self) -> int:
        return len(self._data) - self._at

    def take(self, count: int) -> bytes:
        if count > self.left:
            raise _Truncated
        piece = self._data[self._at : self._at + count]
        self._at += count
        return piece

    def skip(self, count: int) -> None:
        self.take(count)

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width))
