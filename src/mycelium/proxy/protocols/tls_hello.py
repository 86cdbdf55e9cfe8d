"""What a TLS ClientHello offers for ALPN, read from the first bytes of a connection.

An opaque inbound port under PERMISSIVE PeerAuthentication receives two kinds of TLS:
the mesh's own mTLS from another sidecar, which this proxy must end, and an app's TLS
from a caller outside the mesh, which must reach the app untouched. Sidecars offer the
ALPN protocol `MESH_ALPN` (and servers select it), so the first record tells them apart
without decrypting anything. Sans-IO: the listener feeds the bytes it holds.

Only the first record is read: a ClientHello larger than one record (16 KiB) is not
something OpenSSL sends, and such a hello is judged "not the mesh's".
"""

from __future__ import annotations

from typing import Literal

from mycelium.identity.tls import MESH_ALPN

RECORD_HEADER = 5
MAX_RECORD = 16384 + 256  # a TLS record's largest length (with some room for padding)
HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 0x01
ALPN_EXTENSION = 16

type HelloVerdict = Literal["mesh", "other"]


def judge_client_hello(prefix: bytes) -> HelloVerdict | None:
    """ "mesh" if `prefix` opens with a ClientHello that offers `MESH_ALPN`, "other" for
    any other bytes (plaintext, another TLS client, a malformed hello); None while the
    first record is still incomplete."""
    if not prefix:
        return None
    if prefix[0] != HANDSHAKE_RECORD:
        return "other"
    if len(prefix) < RECORD_HEADER:
        return None
    length = int.from_bytes(prefix[3:5])
    if prefix[1] != 0x03 or length > MAX_RECORD:
        return "other"
    if len(prefix) < RECORD_HEADER + length:
        return None
    offered = _offered_alpn(prefix[RECORD_HEADER : RECORD_HEADER + length])
    return "mesh" if MESH_ALPN.encode() in offered else "other"


def _offered_alpn(hello: bytes) -> list[bytes]:
    """The ALPN names in a ClientHello handshake message; [] when absent or malformed."""
    reader = _Reader(hello)
    try:
        if reader.take(1)[0] != CLIENT_HELLO:
            return []
        reader.skip(3)  # handshake length: the record bounds us already
        reader.skip(2 + 32)  # legacy version, random
        reader.skip(reader.number(1))  # session id
        reader.skip(reader.number(2))  # cipher suites
        reader.skip(reader.number(1))  # compression methods
        extensions = _Reader(reader.take(reader.number(2)))
        while extensions.left:
            kind = extensions.number(2)
            body = extensions.take(extensions.number(2))
            if kind != ALPN_EXTENSION:
                continue
            names = _Reader(body)
            listed = _Reader(names.take(names.number(2)))
            found = []
            while listed.left:
                found.append(listed.take(listed.number(1)))
            return found
    except _Truncated:
        return []
    return []


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
