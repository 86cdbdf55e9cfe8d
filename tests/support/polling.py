"""Wait for a condition with a deadline, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_INTERVAL_S = 0.02


async def eventually[T](
    check: Callable[[], T | Awaitable[T]], *, timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy; return that, or fail at the deadline.

    An AssertionError raised by `check` counts as "not yet"; the last one is re-raised
    at the deadline, so the failure says what was still wrong.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last: AssertionError | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except AssertionError as exc:
            last = exc
        if loop.time() > deadline:
            if last is not None:
                raise last
            raise AssertionError(f"{what} not met within {timeout} s")
        await asyncio.sleep(POLL_INTERVAL_S)


def wait_for[T](check: Callable[[], T | None], timeout: float, what: str) -> T:
    """The blocking twin of `eventually`, for tests that drive processes from a thread:
    `check()` polled until it is truthy; its value, or a failure at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s; last: {result!r}"
        time.sleep(0.1)
