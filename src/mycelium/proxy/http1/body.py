"""A request body on its way from the downstream connection to an upstream one.

Small bodies (the common case) are complete before the exchange starts and are simply a
list of chunks: they can be replayed for a retry or a mirror. A larger body streams:
the exchange starts once `BUFFER_LIMIT` bytes are buffered and then pulls chunks as
they arrive; such a request is not retried, since its beginning is gone. The stream
tells the downstream connection to pause reading while too much is buffered.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

# Bodies up to this size are buffered whole, which makes their requests retryable.
# Envoy's default retry buffer is 64 KiB too ("per_request_buffer_limit_bytes").
BUFFER_LIMIT = 64 * 1024
# Pause reading from the client when this much is buffered and not yet sent upstream.
HIGH_WATER = 256 * 1024


class BodyStream:
    __slots__ = (
        "_chunks",
        "_pause",
        "_paused",
        "_resume",
        "_waiter",
        "buffered",
        "complete",
        "failed",
        "replayable",
        "total",
        "trailers",
    )

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._pause = pause
        self._resume = resume
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.buffered = 0  # bytes received and not yet taken
        self.total = 0  # bytes received in all
        self.complete = False
        self.failed: BaseException | None = None
        self.replayable: list[bytes] | None = []  # every chunk, while the body is small
        self.trailers: list[tuple[bytes, bytes]] = []

    # --- the downstream side feeds it ------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self.buffered += len(data)
        self.total += len(data)
        if self.replayable is not None:
            if self.total <= BUFFER_LIMIT:
                self.replayable.append(data)
            else:
                self.replayable = None
        if self.buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.complete = True
        self.trailers = trailers
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.failed = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- the exchange takes from it ---------------------------------------------------

    @property
    def ready(self) -> bool:
        """Worth starting the exchange: complete, or too big to wait for."""
        return self.complete or self.total > BUFFER_LIMIT or self.failed is not None

    async def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end of the body."""
        while not self._chunks:
            if self.failed is not None:
                raise self.failed
            if self.complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        chunk = self._chunks.popleft()
        self.buffered -= len(chunk)
        if self._paused and self.buffered < HIGH_WATER // 2:
            self._paused = False
            self._resume()
        return chunk

    def replay(self) -> list[bytes] | None:
        """The whole body again (for a retry or a mirror), if it was small and complete."""
        if not self.complete or self.replayable is None:
            return None
        return self.replayable
