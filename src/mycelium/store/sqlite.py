"""The embedded store: etcd's data model in one SQLite file, for a single machine.

Tables: `kv` holds the live keys; `events` is the append-only change log that watches
read history from; `meta` holds the current and the compacted revision; `leases` holds
each lease's TTL and wall-clock expiry, so that leases survive a restart.

Invariants:
- every statement runs on one dedicated worker thread (`_Database` is only touched
  there): the event loop never waits on an fsync, and writes are serialized without
  locks;
- one write commits its `kv` rows, its events and the new revision in one SQLite
  transaction (WAL, synchronous=FULL): a write that was acknowledged survives `kill -9`;
- the worker thread hands each committed revision to the event loop with
  `call_soon_threadsafe`, so watchers receive revisions in commit order, before the
  writer's await returns;
- only this process may open the file (exclusive locking): watches are notified
  in-process, so a second writer would make them miss events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Concatenate

from mycelium.store.base import (
    CompactedError,
    Compare,
    CompareFailed,
    Delete,
    Event,
    KeyValue,
    LeaseNotFound,
    Put,
    RangeResult,
    StoreError,
    TxnOp,
    TxnResult,
    check_key,
    check_txn,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# History kept for watchers that fall behind or reconnect: a controller restarting or a
# consumer pausing can catch up from the log over this many revisions, as they could
# from etcd with its usual retention. At a few KB per resource that is tens of MB.
AUTO_COMPACT_KEEP_REVISIONS = 10_000
# Compact in batches, not on every write: one DELETE of a thousand rows is cheap, a
# thousand DELETEs of one row are not.
AUTO_COMPACT_EVERY_REVISIONS = 1_000

# Live revisions buffered per watcher before it falls back to reading the log; bounds
# the memory a slow consumer can pin (the log holds everything anyway).
WATCH_QUEUE_REVISIONS = 1_024
# Revisions read from the log per worker call while a watcher catches up, so that a
# long catch-up neither pins memory nor holds the worker thread for long.
WATCH_PAGE_REVISIONS = 1_000

# The expiry task sleeps until the earliest lease expiry, but wakes at least this often
# to re-read the wall clock, which may have been stepped since it went to sleep.
LEASE_SWEEP_MAX_INTERVAL_S = 1.0

# How long to wait for the file's lock before concluding another process holds it.
LOCK_WAIT_MS = 2_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision, compacted) VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    key BLOB NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires_at);
"""


def _prefix_bounds(prefix: str) -> tuple[bytes, bytes | None]:
    """[start, end) of the keys starting with `prefix`, as UTF-8 bytes; end None: no bound."""
    start = prefix.encode()
    end = bytearray(start)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return start, bytes(end)
        end.pop()
    return start, None


type _Batch = list[Event]  # the events of one revision, in the order of its operations


@dataclass(frozen=True, slots=True)
class _Outcome:
    succeeded: bool
    revision: int
    failed: list[tuple[Compare, int]]  # each failed compare with the key's actual revision
    changed: bool  # False when the operations changed nothing (no new revision)


class _Database:
    """The synchronous core; every method runs on the store's worker thread."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, on_commit: Callable[[_Batch], None]
    ) -> None:
        self._conn = conn
        self.path = path
        self._on_commit = on_commit
        row = conn.execute("SELECT revision, compacted FROM meta WHERE id = 0").fetchone()
        self.revision: int = row[0]
        self.compacted: int = row[1]

    @classmethod
    def open(cls, path: Path, on_commit: Callable[[_Batch], None]) -> _Database:
        path = path.expanduser().absolute()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {path.parent} for the store: {exc}") from exc
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        try:
            conn.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}")
            # Exclusive before WAL: the WAL index then lives in this process's memory and
            # no other process can open the file behind our watchers' backs.
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{path}: SQLite refused WAL mode ({mode!r}); use a local disk")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path} was written by a newer Mycelium (schema {version}); upgrade this one"
                )
            with _transaction(conn):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return cls(conn, path, on_commit)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def current_revision(self) -> int:
        return self.revision

    # --- reads ---------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        row = self._conn.execute(
            "SELECT key, value, create_revision, mod_revision, lease FROM kv WHERE key = ?",
            (key.encode(),),
        ).fetchone()
        return None if row is None else _key_value(row)

    def range(self, prefix: str) -> RangeResult:
        # One thread does every write, so nothing can commit between these statements.
        start, end = _prefix_bounds(prefix)
        columns = "SELECT key, value, create_revision, mod_revision, lease FROM kv"
        if end is None:
            rows = self._conn.execute(f"{columns} WHERE key >= ? ORDER BY key", (start,))
        else:
            rows = self._conn.execute(
                f"{columns} WHERE key >= ? AND key < ? ORDER BY key", (start, end)
            )
        return RangeResult(kvs=[_key_value(row) for row in rows], revision=self.revision)

    def history(self, prefix: str, first: int, limit: int) -> tuple[list[_Batch], int, bool]:
        """Events under `prefix` in revisions [first, last]: (batches, last, complete).

        `last` is at most `first + limit - 1` and at most the current revision: every
        revision up to it has been read, including those with no event under `prefix`.
        `complete` says that `last` is the current revision.
        """
        if first < self.compacted:
            raise CompactedError(first, self.compacted)
        last = min(self.revision, first + limit - 1)
        if last < first:  # a watch from the future: nothing to read yet
            return [], first - 1, True
        start, end = _prefix_bounds(prefix)
        query = (
            "SELECT revision, key, type, value, create_revision, lease FROM events "
            "WHERE revision >= ? AND revision <= ? AND key >= ?"
        )
        params: tuple[object, ...] = (first, last, start)
        if end is not None:
            query += " AND key < ?"
            params = (*params, end)
        batches: list[_Batch] = []
        for revision, key, kind, value, create_revision, lease in self._conn.execute(
            query + " ORDER BY revision, seq", params
        ):
            event = Event(
                type=kind,
                key=key.decode(),
                value=value,
                revision=revision,
                create_revision=create_revision,
                lease=lease,
            )
            if batches and batches[-1][0].revision == revision:
                batches[-1].append(event)
            else:
                batches.append([event])
        return batches, last, last == self.revision

    # --- writes --------------------------------------------------------------------

    def apply(self, compares: Sequence[Compare], ops: Sequence[TxnOp]) -> _Outcome:
        """If every compare holds, apply `ops` at one new revision (none if nothing changed)."""
        with _transaction(self._conn):
            failed = [
                (compare, actual)
                for compare in compares
                if (actual := self._mod_revision(compare.key)) != compare.mod_revision
            ]
            if failed:
                return _Outcome(False, self.revision, failed, changed=False)
            now = time.time()
            for op in ops:
                if isinstance(op, Put) and op.lease and not self._lease_alive(op.lease, now):
                    raise LeaseNotFound(op.lease)
            batch = self._write(ops, self.revision + 1)
        return self._committed(batch)

    def _write(self, ops: Sequence[TxnOp], revision: int) -> _Batch:
        """Apply `ops` at `revision` inside the caller's transaction; return their events."""
        batch: _Batch = []
        for op in ops:
            key = op.key.encode()
            if isinstance(op, Put):
                row = self._conn.execute(
                    "SELECT create_revision FROM kv WHERE key = ?", (key,)
                ).fetchone()
                created = revision if row is None else row[0]
                self._conn.execute(
                    "INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision, lease)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key, op.value, created, revision, op.lease),
                )
                batch.append(Event("put", op.key, op.value, revision, created, op.lease))
            elif self._conn.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                batch.append(Event("delete", op.key, b"", revision))
        if batch:
            self._conn.executemany(
                "INSERT INTO events (revision, seq, key, type, value, create_revision, lease)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (revision, seq, e.key.encode(), e.type, e.value, e.create_revision, e.lease)
                    for seq, e in enumerate(batch)
                ],
            )
            self._conn.execute("UPDATE meta SET revision = ? WHERE id = 0", (revision,))
        return batch

    def _committed(self, batch: _Batch) -> _Outcome:
        """Bookkeeping after a commit: publish the batch, compact now and then."""
        if not batch:
            return _Outcome(True, self.revision, [], changed=False)
        self.revision = batch[0].revision
        self._on_commit(batch)
        if self.revision - self.compacted >= (
            AUTO_COMPACT_KEEP_REVISIONS + AUTO_COMPACT_EVERY_REVISIONS
        ):
            self.compact(self.revision - AUTO_COMPACT_KEEP_REVISIONS)
        return _Outcome(True, self.revision, [], changed=True)

    def compact(self, revision: int) -> None:
        if revision > self.revision:
            raise StoreError(
                f"cannot compact to revision {revision}: the store is only at {self.revision}"
            )
        if revision <= self.compacted:
            return  # already forgotten; compaction is idempotent
        with _transaction(self._conn):
            self._conn.execute("DELETE FROM events WHERE revision < ?", (revision,))
            self._conn.execute("UPDATE meta SET compacted = ? WHERE id = 0", (revision,))
        self.compacted = revision

    # --- leases --------------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        with _transaction(self._conn):
            cursor = self._conn.execute(
                "INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, time.time() + ttl)
            )
        lease_id = cursor.lastrowid
        assert lease_id is not None
        return lease_id

    def keep_alive(self, lease_id: int) -> float:
        now = time.time()
        # A keep-alive is the most frequent write (every proxy, every few seconds) and
        # the least precious: losing the last one to a power cut only shortens a lease.
        # So it skips the fsync (WAL commits still survive a killed process).
        self._conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with _transaction(self._conn):
                row = self._conn.execute(
                    "SELECT ttl, expires_at FROM leases WHERE id = ?", (lease_id,)
                ).fetchone()
                if row is not None and row[1] > now:
                    self._conn.execute(
                        "UPDATE leases SET expires_at = ? WHERE id = ?", (now + row[0], lease_id)
                    )
                    return float(row[0])
        finally:
            self._conn.execute("PRAGMA synchronous = FULL")
        if row is not None:
            self.revoke_lease(lease_id)  # expired, the sweeper just had not got to it yet
        raise LeaseNotFound(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        """Delete the lease and, at one revision, its keys."""
        with _transaction(self._conn):
            keys = [
                row[0].decode()
                for row in self._conn.execute(
                    "SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,)
                )
            ]
            self._conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
            batch = self._write([Delete(key) for key in keys], self.revision + 1)
        self._committed(batch)

    def expire_leases(self) -> float | None:
        """Revoke every lease past its expiry; return the next expiry time, if any."""
        now = time.time()
        expired = [
            row[0]
            for row in self._conn.execute(
                "SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at", (now,)
            )
        ]
        for lease_id in expired:
            self.revoke_lease(lease_id)
        row = self._conn.execute("SELECT MIN(expires_at) FROM leases").fetchone()
        return None if row[0] is None else float(row[0])

    def _lease_alive(self, lease_id: int, now: float) -> bool:
        row = self._conn.execute(
            "SELECT expires_at FROM leases WHERE id = ?", (lease_id,)
        ).fetchone()
        return row is not None and row[0] > now

    def _mod_revision(self, key: str) -> int:
        row = self._conn.execute(
            "SELECT mod_revision FROM kv WHERE key = ?", (key.encode(),)
        ).fetchone()
        return 0 if row is None else int(row[0])


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a transaction never fails half-way
    # because another connection upgraded first (there is none, but the lock is cheap).
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _key_value(row: tuple[bytes, bytes, int, int, int]) -> KeyValue:
    key, value, create_revision, mod_revision, lease = row
    return KeyValue(key.decode(), value, create_revision, mod_revision, lease)


@dataclass(eq=False, slots=True)
class _Subscription:
    """One watcher's inbox of live revisions, filled on the event loop by `_publish`."""

    prefix: str
    queue: asyncio.Queue[_Batch | None] = field(
        default_factory=lambda: asyncio.Queue(WATCH_QUEUE_REVISIONS)
    )
    # Set when the inbox overflowed: the watcher drops its inbox and reads the log.
    overflowed: bool = False

    def offer(self, batch: _Batch) -> None:
        if self.overflowed:
            return
        mine = [event for event in batch if event.key.startswith(self.prefix)]
        if not mine:
            return
        try:
            self.queue.put_nowait(mine)
        except asyncio.QueueFull:
            self.overflowed = True

    def restart_from_log(self) -> None:
        self.overflowed = False
        while not self.queue.empty():
            self.queue.get_nowait()

    def wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class SqliteStore:
    """The embedded `Store`: see the module docstring. Open with `await SqliteStore.open`."""

    name: str = "sqlite"

    def __init__(
        self, path: Path, executor: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.path = path
        self._executor = executor
        self._loop = loop
        self._db: _Database | None = None  # set by open(), used only on the worker thread
        self._subscriptions: set[_Subscription] = set()
        self._lease_granted = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | PathLike[str]) -> SqliteStore:
        """Open (creating it and its parent directories if needed) the store at `path`."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mycelium-sqlite")
        store = cls(Path(path), executor, asyncio.get_running_loop())
        try:
            store._db = await store._run(_Database.open, store.path, store._from_worker)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        store.path = store._db.path
        store._expiry_task = asyncio.create_task(
            store._expire_leases(), name=f"sqlite-store-lease-expiry:{store.path}"
        )
        return store

    # --- the Store protocol --------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        check_key(key)
        return await self._call(_Database.get, key)

    async def range(self, prefix: str) -> RangeResult:
        return await self._call(_Database.range, prefix)

    async def put(
        self, key: str, value: bytes, *, expect_revision: int | None = None, lease: int = 0
    ) -> int:
        check_key(key)
        compares = [] if expect_revision is None else [Compare(key, expect_revision)]
        outcome = await self._call(_Database.apply, compares, [Put(key, value, lease)])
        if not outcome.succeeded:
            compare, actual = outcome.failed[0]
            raise CompareFailed(key, compare.mod_revision, actual)
        return outcome.revision

    async def delete(self, key: str, *, expect_revision: int | None = None) -> int | None:
        check_key(key)
        compares = [] if expect_revision is None else [Compare(key, expect_revision)]
        outcome = await self._call(_Database.apply, compares, [Delete(key)])
        if not outcome.succeeded:
            compare, actual = outcome.failed[0]
            raise CompareFailed(key, compare.mod_revision, actual)
        return outcome.revision if outcome.changed else None

    async def txn(self, compares: Sequence[Compare], ops: Sequence[TxnOp]) -> TxnResult:
        check_txn(compares, ops)
        compares, ops = list(compares), list(ops)
        outcome = await self._call(_Database.apply, compares, ops)
        return TxnResult(
            succeeded=outcome.succeeded,
            revision=outcome.revision,
            failed_compares=[compare for compare, _ in outcome.failed],
        )

    async def revision(self) -> int:
        return await self._call(_Database.current_revision)

    async def watch(self, prefix: str, from_revision: int | None = None) -> AsyncIterator[Event]:
        """See `Store.watch`. Reads the log, then follows live revisions with no gap.

        The inbox is registered before the log is read, so a revision committed while
        the log is read lands in both; `covered` (every revision up to it delivered or
        known to hold nothing under `prefix`) drops those duplicates.
        """
        self._check_open()
        subscription = _Subscription(prefix)
        self._subscriptions.add(subscription)
        try:
            if from_revision is None:
                covered = await self.revision()
                from_log = False
            else:
                covered = max(from_revision, 0) - 1
                from_log = True
            while True:
                self._check_open()
                if from_log or subscription.overflowed:
                    # Whatever was dropped from the inbox was committed, so it is in the
                    # log; read the log up to the current revision, then follow the inbox.
                    subscription.restart_from_log()
                    complete = False
                    while not complete:
                        batches, covered, complete = await self._call(
                            _Database.history, prefix, covered + 1, WATCH_PAGE_REVISIONS
                        )
                        for batch in batches:
                            for event in batch:
                                yield event
                    from_log = False
                    continue
                live = await subscription.queue.get()
                if live is None:  # woken by close()
                    continue
                if live[0].revision <= covered:
                    continue  # also read from the log
                for event in live:
                    yield event
                covered = live[0].revision
        finally:
            self._subscriptions.discard(subscription)

    async def grant_lease(self, ttl: float) -> int:
        if not ttl > 0:
            raise StoreError(f"a lease TTL must be positive, got {ttl}")
        lease_id = await self._call(_Database.grant_lease, ttl)
        self._lease_granted.set()
        return lease_id

    async def keep_alive(self, lease_id: int) -> float:
        return await self._call(_Database.keep_alive, lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call(_Database.revoke_lease, lease_id)

    async def compact(self, revision: int) -> None:
        await self._call(_Database.compact, revision)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        for subscription in self._subscriptions:
            subscription.wake()
        db = self._db
        self._db = None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._run(db.close)
        self._executor.shutdown(wait=False)

    # --- plumbing ------------------------------------------------------------------

    async def _call[**P, T](
        self, method: Callable[Concatenate[_Database, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a `_Database` method on the worker thread."""
        self._check_open()
        db = self._db
        assert db is not None
        return await self._run(method, db, *args, **kwargs)

    async def _run[**P, T](self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await self._loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StoreError(
                    f"{self.path} is in use by another process (or another open store in "
                    "this one); stop it, or give this one another store path"
                ) from exc
            raise StoreError(f"sqlite store {self.path}: {exc}; check the disk") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the sqlite store {self.path} is closed")

    def _from_worker(self, batch: _Batch) -> None:
        """Called on the worker thread right after a commit; hops to the event loop."""
        self._loop.call_soon_threadsafe(self._publish, batch)

    def _publish(self, batch: _Batch) -> None:
        for subscription in self._subscriptions:
            subscription.offer(batch)

    async def _expire_leases(self) -> None:
        """Background task: revoke leases when their wall-clock expiry passes."""
        while True:
            self._lease_granted.clear()  # before the sweep, so no grant goes unnoticed
            try:
                next_expiry = await self._call(_Database.expire_leases)
            except StoreError:
                log.exception("lease expiry failed; retrying in %s s", LEASE_SWEEP_MAX_INTERVAL_S)
                next_expiry = None
            delay = LEASE_SWEEP_MAX_INTERVAL_S
            if next_expiry is not None:
                delay = min(max(next_expiry - time.time(), 0.0), delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._lease_granted.wait()
