"""A `Store` that times every call to another one: the controller's store latency.

`TimedStore` wraps the backend the controller opened, passes each call through
unchanged, and tells an observer how long it took (failed calls too) and, for a
failure, the error's class. A watch is not timed (it lasts as long as its consumer);
only its failures are reported. The store package stays free of any metrics library:
the observer is a two-method protocol the controller's metrics implement.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Protocol

from mycelium.store.base import Compare, Event, KeyValue, RangeResult, Store, TxnOp, TxnResult


class StoreObserver(Protocol):
    def store_call(self, operation: str, seconds: float) -> None:
        """A call to `operation` (get, range, put...) returned or raised after `seconds`."""

    def store_error(self, operation: str, error: str) -> None:
        """A call to `operation` raised; `error` is the exception's class name."""


class TimedStore:
    """The `Store` contract, delegated to `inner` and timed."""

    def __init__(self, inner: Store, observer: StoreObserver) -> None:
        self.inner = inner
        self.name = inner.name
        self._observer = observer

    async def _timed[T](self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except Exception as exc:  # cancellation is not a store failure: BaseException
            self._observer.store_error(operation, type(exc).__name__)
            raise
        finally:
            self._observer.store_call(operation, time.perf_counter() - started)

    async def get(self, key: str) -> KeyValue | None:
        return await self._timed("get", self.inner.get(key))

    async def range(self, prefix: str) -> RangeResult:
        return await self._timed("range", self.inner.range(prefix))

    async def put(
        self, key: str, value: bytes, *, expect_revision: int | None = None, lease: int = 0
    ) -> int:
        call = self.inner.put(key, value, expect_revision=expect_revision, lease=lease)
        return await self._timed("put", call)

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        return await self._timed("delete", self.inner.delete(key, expect_revision=expect_revision))

    async def txn(self, compares: Sequence[Compare], ops: Sequence[TxnOp]) -> TxnResult:
        return await self._timed("txn", self.inner.txn(compares, ops))

    async def revision(self) -> int:
        return await self._timed("revision", self.inner.revision())

    def watch(self, prefix: str, from_revision: int | None = None) -> AsyncIterator[Event]:
        return self._watch(prefix, from_revision)

    async def _watch(self, prefix: str, from_revision: int | None) -> AsyncIterator[Event]:
        events = self.inner.watch(prefix, from_revision)
        try:
            async for event in events:
                yield event
        except Exception as exc:
            self._observer.store_error("watch", type(exc).__name__)
            raise
        finally:
            # Our consumer's aclose() stops this generator; the backend's must stop too.
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def grant_lease(self, ttl: float) -> int:
        return await self._timed("grant_lease", self.inner.grant_lease(ttl))

    async def keep_alive(self, lease_id: int) -> float:
        return await self._timed("keep_alive", self.inner.keep_alive(lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        await self._timed("revoke_lease", self.inner.revoke_lease(lease_id))

    async def compact(self, revision: int) -> None:
        await self._timed("compact", self.inner.compact(revision))

    async def close(self) -> None:
        await self.inner.close()
