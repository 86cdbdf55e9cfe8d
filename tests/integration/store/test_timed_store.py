"""`TimedStore` reports every call with its operation, and each failure with its error
class, and hands results and exceptions back untouched (the contract itself is held by
test_contract's `sqlite-timed` backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mycelium.store import (
    CompactedError,
    Compare,
    CompareFailed,
    Put,
    SqliteStore,
    TimedStore,
)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.errors: list[tuple[str, str]] = []

    def store_call(self, operation: str, seconds: float) -> None:
        assert seconds >= 0
        self.calls.append(operation)

    def store_error(self, operation: str, error: str) -> None:
        self.errors.append((operation, error))


@pytest.fixture
async def timed(tmp_path: Path) -> AsyncIterator[tuple[TimedStore, Recorder]]:
    recorder = Recorder()
    store = TimedStore(await SqliteStore.open(tmp_path / "store.db"), recorder)
    try:
        yield store, recorder
    finally:
        await store.close()


async def test_each_call_is_reported_by_operation(timed: tuple[TimedStore, Recorder]) -> None:
    store, recorder = timed
    revision = await store.put("/k/a", b"1")
    assert (await store.get("/k/a")) is not None
    assert [kv.key for kv in (await store.range("/k/")).kvs] == ["/k/a"]
    await store.txn([Compare("/k/b", 0)], [Put("/k/b", b"2")])
    assert await store.delete("/k/a") == revision + 2
    lease = await store.grant_lease(30)
    await store.keep_alive(lease)
    await store.revoke_lease(lease)
    assert await store.revision() >= revision + 2
    assert recorder.calls == [
        "put",
        "get",
        "range",
        "txn",
        "delete",
        "grant_lease",
        "keep_alive",
        "revoke_lease",
        "revision",
    ]
    assert recorder.errors == []


async def test_a_failed_call_is_timed_counted_and_raised(
    timed: tuple[TimedStore, Recorder],
) -> None:
    store, recorder = timed
    await store.put("/k/a", b"1")
    with pytest.raises(CompareFailed):
        await store.put("/k/a", b"2", expect_revision=0)
    assert recorder.calls == ["put", "put"]
    assert recorder.errors == [("put", "CompareFailed")]


async def test_a_failed_watch_is_counted(timed: tuple[TimedStore, Recorder]) -> None:
    store, recorder = timed
    for value in (b"1", b"2", b"3"):
        await store.put("/k/a", value)
    await store.compact(await store.revision())
    with pytest.raises(CompactedError):
        async for _ in store.watch("/k/", 1):
            pass
    assert ("watch", "CompactedError") in recorder.errors
