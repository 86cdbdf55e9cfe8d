"""Work inside another network namespace, from a process that stays in its own.

A socket belongs to the namespace it was *created* in for its whole life: creating it
there is enough, and the event loop then uses it from any thread. `InNamespace` owns
one thread that entered a namespace once (`os.setns`, DESIGN.md "Performance facts")
and runs blocking calls there: creating sockets, resolving names with that
namespace's view. The loop's own thread never changes namespace.

Invariant: nothing runs on the thread before its entry succeeded; after a failed entry
every call raises `NamespaceError`, which says what to check.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Self

from mycelium.net.errors import NamespaceError

# Where `ip netns add` makes a namespace's handle.
NETNS_RUN_DIR = Path("/run/netns")


class InNamespace:
    """Runs blocking calls inside one network namespace, on a dedicated thread.

    The thread calls `os.setns` on `/run/netns/<netns>` once, before any call; with
    `netns=None` it stays in this process's namespace (the host's). Sockets created by
    `await in_ns.call(socket.socket, ...)` belong to that namespace for their whole
    life. Several users may share one. `close()` ends the thread."""

    def __init__(self, netns: str | None = None, *, run_dir: Path = NETNS_RUN_DIR) -> None:
        self.netns = netns
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{netns or 'host'}"
        )
        # The one worker thread runs this first; every call waits for it, so nothing
        # ever runs in the wrong namespace after a failed entry.
        self._entered: Future[None] = self._executor.submit(self._enter, run_dir)

    def _enter(self, run_dir: Path) -> None:
        if self.netns is None:
            return
        path = run_dir / self.netns
        try:
            with open(path) as handle:
                os.setns(handle.fileno(), os.CLONE_NEWNET)
        except OSError as exc:
            raise NamespaceError(
                f"cannot enter network namespace {self.netns!r} ({path}): {exc}; check that "
                "it exists (`ip netns list`) and that this process runs as root"
            ) from exc

    async def call[**P, T](self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` run inside the namespace; raises `NamespaceError` if
        the namespace could not be entered."""
        await asyncio.wrap_future(self._entered)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        """End the thread (after the calls already queued)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InNamespace({self.netns or 'host'})"
