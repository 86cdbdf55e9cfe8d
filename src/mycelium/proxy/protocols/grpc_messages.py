"""Counting gRPC messages in a stream's body, for Istio's message counters.

A gRPC body is a sequence of length-prefixed messages: one flag byte, a 4-byte
big-endian length, then that many bytes. DATA frames cut it anywhere, so the counter
keeps where it is in the current message across chunks: a prefix split over two
chunks, a message spanning many. It only counts; bodies pass through untouched.
Sans-IO: fed bytes, asked for a number.
"""

from __future__ import annotations

PREFIX_BYTES = 5


class GrpcMessageCounter:
    """Messages begun in the bytes fed so far (`count`)."""

    __slots__ = ("_prefix", "_skip", "count")

    def __init__(self) -> None:
        self.count = 0
        self._skip = 0  # bytes of the current message still to come
        self._prefix = b""  # a length prefix cut by a chunk boundary

    def feed(self, data: bytes) -> None:
        position = 0
        size = len(data)
        while position < size:
            if self._skip:
                step = min(self._skip, size - position)
                self._skip -= step
                position += step
                continue
            needed = PREFIX_BYTES - len(self._prefix)
            self._prefix += data[position : position + needed]
            position += needed
            if len(self._prefix) < PREFIX_BYTES:
                return  # the rest of the prefix comes with the next chunk
            self.count += 1
            self._skip = int.from_bytes(self._prefix[1:], "big")
            self._prefix = b""
