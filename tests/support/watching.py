"""Consume a store watch in the background, so that a test can write while it listens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.support.polling import eventually

from mycelium.store import Event, StoreError


class WatchRecorder:
    """Collects every event of `stream` into `events`; a StoreError lands in `error`."""

    def __init__(self, stream: AsyncIterator[Event]) -> None:
        self.events: list[Event] = []
        self.error: StoreError | None = None
        self._stream = stream
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for event in self._stream:
                self.events.append(event)
        except StoreError as exc:
            self.error = exc

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Event]:
        """Wait until `count` events arrived (fail at once on a watch error); return them."""

        def arrived() -> bool:
            if self.error is not None:
                raise self.error
            return len(self.events) >= count

        await eventually(arrived, timeout=timeout, what=f"{count} watch events")
        return self.events[:count]

    async def wait_for_revision(self, revision: int, *, timeout: float = 10.0) -> None:
        """Wait until an event at `revision` or later arrived."""

        def reached() -> bool:
            if self.error is not None:
                raise self.error
            return bool(self.events) and self.events[-1].revision >= revision

        await eventually(reached, timeout=timeout, what=f"a watch event at revision {revision}")

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()
