"""The embedded store keeps every write it acknowledged, across `kill -9` and restarts.

A child process writes keys as fast as it can and prints each revision the store
acknowledged; we SIGKILL it mid-stream, reopen the file, and look for every one of them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from tests.support.polling import eventually

from mycelium.store import SqliteStore

# Enough acknowledged writes that the kill lands in the middle of a busy stream.
ACKNOWLEDGED_BEFORE_KILL = 200

_WRITER = """
import asyncio, sys
from mycelium.store import SqliteStore

async def main():
    store = await SqliteStore.open(sys.argv[1])
    index = 0
    while True:
        revision = await store.put(f"/durable/{index:08d}", str(index).encode())
        print(index, revision, flush=True)  # only after the store acknowledged it
        index += 1

asyncio.run(main())
"""


async def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state" / "store.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, str(path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    acknowledged: dict[int, int] = {}
    try:
        async with asyncio.timeout(60):
            while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL:
                line = await child.stdout.readline()
                assert line, f"the writer exited early with {await child.wait()}"
                index, revision = map(int, line.split())
                acknowledged[index] = revision
    finally:
        child.send_signal(signal.SIGKILL)
        # Lines already printed were acknowledged too, even if we had not read them yet.
        for line in (await child.stdout.read()).splitlines():
            if len(line.split()) == 2:
                index, revision = map(int, line.split())
                acknowledged[index] = revision
        await child.wait()
    assert child.returncode == -signal.SIGKILL

    store = await SqliteStore.open(path)
    try:
        for index, revision in acknowledged.items():
            kv = await store.get(f"/durable/{index:08d}")
            assert kv is not None, f"acknowledged write {index} (revision {revision}) was lost"
            assert (kv.value, kv.mod_revision) == (str(index).encode(), revision)
        assert await store.revision() >= max(acknowledged.values())
        # The change log survived as well: a watch replays every acknowledged write.
        stream = store.watch("/durable/", 1)
        replayed = [await anext(stream) for _ in acknowledged]
        await stream.aclose()  # type: ignore[attr-defined]
        assert [e.revision for e in replayed] == sorted(acknowledged.values())
    finally:
        await store.close()


async def test_a_lease_outlives_a_restart_and_expires_by_the_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await SqliteStore.open(path)
    long_lease = await store.grant_lease(60)
    short_lease = await store.grant_lease(0.5)
    await store.put("/l/long", b"x", lease=long_lease)
    await store.put("/l/short", b"x", lease=short_lease)
    short_expires = time.time() + 0.5
    await store.close()

    store = await SqliteStore.open(path)
    try:
        assert await store.keep_alive(long_lease) == 60
        await eventually(lambda: time.time() > short_expires, what="the short lease's expiry")

        async def short_key_gone() -> bool:
            return await store.get("/l/short") is None

        await eventually(short_key_gone, timeout=5, what="expiry after a restart")
        assert await store.get("/l/long") is not None
    finally:
        await store.close()
