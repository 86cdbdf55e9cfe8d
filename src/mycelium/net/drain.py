"""Graceful drain as a trigger and its watchers (the pair of ztunnel's `drain.rs`).

Whoever owns a drain (a proxy, a port forward) holds one `DrainTrigger`. Each piece of
work the drain must wait for (a connection, a relay) holds a `DrainWatcher` taken from
it. `trigger.start()` says "drain now" once: every watcher's `on_drain` callback runs,
and `await watcher.wait()` returns. `await trigger.released()` returns once every
watcher has been released, woken by the last release: nothing polls.

`DrainSet` is the same pair for work that is kept in a set anyway: the set holds a
watcher while it has members, so a drain waits exactly until it is empty, and each
member gets the set's `on_drain` callback (at once if it joins during the drain).

Invariants: `start()` and `release()` may be called again, to no effect; an `on_drain`
callback runs at most once, never after its watcher was released, and never awaits
(the callers are `asyncio.Protocol`s); a failing callback is logged and the others
still run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Self

log = logging.getLogger(__name__)

type DrainCallback = Callable[[], object]


class DrainTrigger:
    """Says "drain now" once, to every watcher; then waits until each has let go."""

    __slots__ = ("_callbacks", "_held", "_released", "_started", "draining")

    def __init__(self) -> None:
        # read on every request's keep-alive decision: a plain attribute, not a property
        self.draining = False
        self._started = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()  # no watcher yet: nothing to wait for
        self._held = 0
        self._callbacks: dict[DrainWatcher, DrainCallback] = {}

    @property
    def held(self) -> int:
        """Watchers handed out and not yet released."""
        return self._held

    def watcher(self) -> DrainWatcher:
        """A new watcher; the drain waits for it until it is released."""
        self._held += 1
        self._released.clear()
        return DrainWatcher(self)

    def start(self) -> None:
        """Drain now: run every watcher's callback and wake every waiting watcher."""
        if self.draining:
            return
        self.draining = True
        self._started.set()
        callbacks, self._callbacks = self._callbacks, {}
        for callback in callbacks.values():
            _run(callback)

    async def released(self) -> None:
        """Return once no watcher is held (at once if none is)."""
        await self._released.wait()

    def _register(self, watcher: DrainWatcher, callback: DrainCallback) -> None:
        if self._started.is_set():
            _run(callback)
        else:
            self._callbacks[watcher] = callback

    def _release(self, watcher: DrainWatcher) -> None:
        self._callbacks.pop(watcher, None)
        self._held -= 1
        if self._held == 0:
            self._released.set()


class DrainWatcher:
    """One piece of work's hold on a drain: learns when it starts, lets go when done.

    Usable as a context manager, which releases it on exit."""

    __slots__ = ("_trigger", "released")

    def __init__(self, trigger: DrainTrigger) -> None:
        self._trigger = trigger
        self.released = False

    @property
    def draining(self) -> bool:
        return self._trigger.draining

    def on_drain(self, callback: DrainCallback) -> None:
        """Call `callback` when the drain starts (now, if it has): one per watcher."""
        if not self.released:
            self._trigger._register(self, callback)

    async def wait(self) -> None:
        """Return once the drain has started."""
        await self._trigger._started.wait()

    def release(self) -> None:
        """This work is over: the drain no longer waits for it."""
        if not self.released:
            self.released = True
            self._trigger._release(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class DrainSet[T: Hashable]:
    """A set of live work that a drain waits for: it holds one watcher while it has
    members, released when the last one leaves. `on_drain(member)` runs for every
    member when the drain starts, and for a member added during the drain as it joins.

    One watcher per set rather than per member: adding and discarding stay a set
    operation and a check, cheap enough for every accepted connection."""

    __slots__ = ("_members", "_on_drain", "_trigger", "_watcher")

    def __init__(
        self, trigger: DrainTrigger, on_drain: Callable[[T], object] | None = None
    ) -> None:
        self._trigger = trigger
        self._on_drain = on_drain
        self._members: set[T] = set()
        self._watcher: DrainWatcher | None = None

    def add(self, item: T) -> None:
        members = self._members
        if item in members:
            return
        members.add(item)
        if self._watcher is None:
            self._watcher = self._trigger.watcher()
            self._watcher.on_drain(self._drain_members)  # runs now if draining already
        elif self._on_drain is not None and self._trigger.draining:
            _run(self._on_drain, item)

    def discard(self, item: T) -> None:
        members = self._members
        members.discard(item)
        if not members and self._watcher is not None:
            self._watcher.release()
            self._watcher = None

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __iter__(self) -> Iterator[T]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __bool__(self) -> bool:
        return bool(self._members)

    def _drain_members(self) -> None:
        on_drain = self._on_drain
        if on_drain is None:
            return
        for member in list(self._members):  # a callback may close, and so discard, it
            _run(on_drain, member)


def _run(callback: Callable[..., object], *args: object) -> None:
    # One connection's failing close must not keep the others from being drained.
    try:
        callback(*args)
    except Exception:
        log.exception("a drain callback failed")
