"""What the embedded store does beyond the shared contract: it owns its file alone,
compacts its own history, and lets a slow watcher catch up from the log."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.store import CompactedError, SqliteStore, StoreError, open_store
from mycelium.store import sqlite as sqlite_module


async def test_a_second_store_on_the_same_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "LOCK_WAIT_MS", 100)
    first = await SqliteStore.open(tmp_path / "store.db")
    try:
        with pytest.raises(StoreError, match="in use"):
            await SqliteStore.open(tmp_path / "store.db")
        assert await first.put("/still/works", b"yes") > 0
    finally:
        await first.close()


async def test_history_is_compacted_automatically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "AUTO_COMPACT_KEEP_REVISIONS", 20)
    monkeypatch.setattr(sqlite_module, "AUTO_COMPACT_EVERY_REVISIONS", 10)
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        for index in range(40):
            last = await store.put(f"/k/{index}", b"x")

        with pytest.raises(CompactedError):
            await anext(store.watch("/k/", 1))
        stream = store.watch("/k/", last - 19)  # the kept window still replays
        event = await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        assert event.revision == last - 19
    finally:
        await store.close()


async def test_a_slow_watcher_catches_up_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "WATCH_QUEUE_REVISIONS", 4)
    monkeypatch.setattr(sqlite_module, "WATCH_PAGE_REVISIONS", 7)
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        first = await store.put("/slow/0", b"0")
        stream = store.watch("/slow/", first)
        assert (await anext(stream)).revision == first  # now following live writes
        written = [first] + [await store.put(f"/slow/{i}", b"x") for i in range(1, 30)]

        seen = [(await anext(stream)).revision for _ in written[1:]]

        await stream.aclose()  # type: ignore[attr-defined]
        assert seen == written[1:]  # its inbox overflowed, yet nothing is missing
    finally:
        await store.close()


@pytest.mark.parametrize(
    "url",
    ["sqlite:relative/store.db", "sqlite:///{tmp}/abs/store.db"],
)
async def test_open_store_accepts_sqlite_urls(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store(url.format(tmp=tmp_path))
    try:
        assert store.name == "sqlite"
        await store.put("/k", b"v")
    finally:
        await store.close()
    assert (tmp_path / ("abs" if "abs" in url else "relative") / "store.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "sqlite:",
        "sqlite://host/x.db",
        "postgres://db",
        "etcd://",
        "etcd://nohost",
        "etcd://h:x",
    ],
)
async def test_open_store_names_the_accepted_forms_for_a_bad_url(url: str) -> None:
    with pytest.raises(StoreError, match="accepted") as refused:
        await open_store(url)
    assert repr(url) in str(refused.value)
