"""The introduction a TCP relay sends first inside the mesh's mTLS.

HTTP callers introduce themselves in a request field (`telemetry.metrics.PEER_HEADER`);
an opaque TCP connection has no fields, so a relay that negotiated `MESH_PEER_ALPN`
sends its introduction as the first plaintext bytes: a 2-byte big-endian length, then
that many bytes. The serving sidecar reads it off before relaying the rest to the app,
as Istio's TCP metadata exchange does behind its own ALPN. Sans-IO: bytes in, the
introduction and what follows it out.
"""

from __future__ import annotations

# An introduction is a few dozen bytes of names; anything longer is not one.
MAX_INTRODUCTION_BYTES = 1024
_LENGTH_BYTES = 2


class PreambleError(ValueError):
    """What came first is not an introduction (too long)."""


def encode_preamble(introduction: bytes) -> bytes:
    """The bytes a relay sends first."""
    if len(introduction) > MAX_INTRODUCTION_BYTES:
        raise PreambleError(f"an introduction of {len(introduction)} bytes is too long")
    return len(introduction).to_bytes(_LENGTH_BYTES, "big") + introduction


class PreambleReader:
    """Collects the preamble from the connection's first bytes (`feed`): once whole,
    `introduction` is set and `feed` returns what followed it (b"" while incomplete)."""

    __slots__ = ("_held", "introduction")

    def __init__(self) -> None:
        self._held = b""
        self.introduction: bytes | None = None

    def feed(self, data: bytes) -> bytes:
        if self.introduction is not None:
            return data
        self._held += data
        if len(self._held) < _LENGTH_BYTES:
            return b""
        size = int.from_bytes(self._held[:_LENGTH_BYTES], "big")
        if size > MAX_INTRODUCTION_BYTES:
            raise PreambleError(
                f"the caller's introduction announces {size} bytes "
                f"(at most {MAX_INTRODUCTION_BYTES})"
            )
        end = _LENGTH_BYTES + size
        if len(self._held) < end:
            return b""
        self.introduction, rest = self._held[_LENGTH_BYTES:end], self._held[end:]
        self._held = b""
        return rest
