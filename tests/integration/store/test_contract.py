"""The store contract (see mycelium.store.base), run unchanged against every backend.

Each test reads as a small story about one promise the control plane relies on. The
`store` fixture runs it against sqlite, a single etcd member and a 3-member etcd cluster.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.polling import eventually
from tests.support.watching import WatchRecorder

from mycelium.store import (
    CompactedError,
    Compare,
    CompareFailed,
    Delete,
    Event,
    LeaseNotFound,
    Put,
    Store,
    StoreError,
    TxnOp,
)

# etcd counts lease TTLs in whole seconds and checks expiry twice a second.
LEASE_TTL_S = 1.0
LEASE_GONE_WITHIN_S = 6.0

# --- keys and values ------------------------------------------------------------------


async def test_each_backend_keeps_the_store_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert store.name in {"sqlite", "etcd"}


async def test_a_missing_key_reads_as_none(store: Store, prefix: str) -> None:
    assert await store.get(prefix + "nothing-here") is None


async def test_put_then_get_returns_the_value_and_its_revisions(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "a", b"one")
    kv = await store.get(prefix + "a")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease) == (
        prefix + "a",
        b"one",
        first,
        first,
        0,
    )

    second = await store.put(prefix + "a", b"two")
    kv = await store.get(prefix + "a")
    assert kv is not None
    assert second > first
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"two", first, second)


async def test_range_lists_only_the_prefix_sorted_by_key(store: Store, prefix: str) -> None:
    # UTF-8 order is code point order: "z" sorts before "é", which sorts before "ö".
    for name in ["z", "ö", "a", "é", "m/nested"]:
        await store.put(prefix + "in/" + name, name.encode())
    await store.put(prefix + "out", b"not listed")
    last = await store.put(prefix + "inx", b"not listed either")

    result = await store.range(prefix + "in/")

    assert [kv.key for kv in result.kvs] == [
        prefix + "in/" + name for name in ["a", "m/nested", "z", "é", "ö"]
    ]
    assert [kv.value for kv in result.kvs] == [b"a", b"m/nested", b"z", "é".encode(), "ö".encode()]
    assert result.revision >= last


async def test_range_of_an_empty_prefix_returns_nothing(store: Store, prefix: str) -> None:
    result = await store.range(prefix)
    assert result.kvs == []
    assert result.revision == await store.revision()


async def test_delete_removes_the_key_and_returns_its_revision(store: Store, prefix: str) -> None:
    written = await store.put(prefix + "gone", b"soon")

    deleted = await store.delete(prefix + "gone")

    assert deleted is not None
    assert deleted > written
    assert await store.get(prefix + "gone") is None
    assert await store.delete(prefix + "gone") is None  # a second delete finds nothing


async def test_an_empty_key_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.put("", b"x")


# --- compare-and-swap -----------------------------------------------------------------


async def test_a_create_only_put_succeeds_once(store: Store, prefix: str) -> None:
    created = await store.put(prefix + "leader", b"me", expect_revision=0)

    with pytest.raises(CompareFailed) as failed:
        await store.put(prefix + "leader", b"you", expect_revision=0)

    assert (failed.value.expected, failed.value.actual) == (0, created)
    kv = await store.get(prefix + "leader")
    assert kv is not None
    assert kv.value == b"me"


async def test_cas_put_with_the_current_revision_succeeds(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "counter", b"1")
    second = await store.put(prefix + "counter", b"2", expect_revision=first)
    kv = await store.get(prefix + "counter")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"2", second)


async def test_cas_put_with_a_stale_revision_writes_nothing(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "counter", b"1")
    second = await store.put(prefix + "counter", b"2")

    with pytest.raises(CompareFailed) as failed:
        await store.put(prefix + "counter", b"stale", expect_revision=first)

    assert (failed.value.key, failed.value.expected, failed.value.actual) == (
        prefix + "counter",
        first,
        second,
    )
    kv = await store.get(prefix + "counter")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"2", second)


async def test_cas_delete_checks_the_revision(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "k", b"1")
    second = await store.put(prefix + "k", b"2")

    with pytest.raises(CompareFailed):
        await store.delete(prefix + "k", expect_revision=first)
    assert await store.get(prefix + "k") is not None

    deleted = await store.delete(prefix + "k", expect_revision=second)
    assert deleted is not None
    assert await store.get(prefix + "k") is None


# --- transactions ---------------------------------------------------------------------


async def test_a_txn_applies_all_its_ops_at_one_revision(store: Store, prefix: str) -> None:
    base = await store.put(prefix + "config", b"v1")
    await store.put(prefix + "old", b"x")
    recorder = WatchRecorder(store.watch(prefix, base + 1))
    try:
        await recorder.wait_for(1)  # the put of "old"

        result = await store.txn(
            [Compare(prefix + "config", base)],
            [Put(prefix + "config", b"v2"), Put(prefix + "new", b"y"), Delete(prefix + "old")],
        )

        assert result.succeeded
        assert result.failed_compares == []
        config = await store.get(prefix + "config")
        new = await store.get(prefix + "new")
        assert config is not None
        assert new is not None
        assert config.mod_revision == new.mod_revision == result.revision
        assert await store.get(prefix + "old") is None
        events = (await recorder.wait_for(4))[1:]
        assert [(e.type, e.key, e.revision) for e in events] == [
            ("put", prefix + "config", result.revision),
            ("put", prefix + "new", result.revision),
            ("delete", prefix + "old", result.revision),
        ]
    finally:
        await recorder.stop()


async def test_a_txn_with_a_failing_compare_writes_nothing(store: Store, prefix: str) -> None:
    a = await store.put(prefix + "a", b"1")
    b = await store.put(prefix + "b", b"1")
    await store.put(prefix + "b", b"2")  # b moved on
    before = await store.range(prefix)

    result = await store.txn(
        [Compare(prefix + "a", a), Compare(prefix + "b", b), Compare(prefix + "c", 0)],
        [Put(prefix + "a", b"new"), Put(prefix + "c", b"new"), Delete(prefix + "b")],
    )

    assert not result.succeeded
    assert result.failed_compares == [Compare(prefix + "b", b)]
    assert result.revision == await store.revision()
    after = await store.range(prefix)
    assert after.kvs == before.kvs


async def test_a_txn_may_not_write_a_key_twice(store: Store, prefix: str) -> None:
    with pytest.raises(StoreError, match="twice"):
        await store.txn([], [Put(prefix + "k", b"1"), Delete(prefix + "k")])
    assert await store.get(prefix + "k") is None


async def test_revisions_only_grow(store: Store, prefix: str) -> None:
    seen = [await store.revision()]
    for index in range(5):
        seen.append(await store.put(f"{prefix}{index}", b"x"))
        seen.append(await store.revision())
    assert seen == sorted(seen)
    writes = seen[1::2]
    assert len(set(writes)) == len(writes)  # each write has its own revision


# --- watches --------------------------------------------------------------------------


async def test_a_watch_replays_history_then_follows_live_writes(store: Store, prefix: str) -> None:
    start = await store.put(prefix + "a", b"1")
    await store.put(prefix + "b", b"1")
    await store.delete(prefix + "a")
    await store.put("/elsewhere" + prefix, b"not under the prefix")

    recorder = WatchRecorder(store.watch(prefix, start))
    try:
        history = await recorder.wait_for(3)
        assert [(e.type, e.key) for e in history] == [
            ("put", prefix + "a"),
            ("put", prefix + "b"),
            ("delete", prefix + "a"),
        ]

        live = await store.put(prefix + "c", b"live")
        await recorder.wait_for(4)
    finally:
        await recorder.stop()

    assert recorder.events[3] == Event("put", prefix + "c", b"live", live, live)
    revisions = [e.revision for e in recorder.events]
    assert revisions == sorted(set(revisions))  # in order, no duplicate


async def test_a_watch_from_now_skips_the_past(store: Store, prefix: str) -> None:
    await store.put(prefix + "old", b"before the watch")
    recorder = WatchRecorder(store.watch(prefix))
    try:

        async def write_and_see() -> bool:
            await store.put(prefix + "new", b"after")
            return bool(recorder.events)

        await eventually(write_and_see, what="an event from a watch started now")
    finally:
        await recorder.stop()
    assert {e.key for e in recorder.events} == {prefix + "new"}


async def test_a_watch_from_a_future_revision_waits_for_it(store: Store, prefix: str) -> None:
    target = await store.revision() + 3
    recorder = WatchRecorder(store.watch(prefix, target))
    try:
        written = [await store.put(f"{prefix}{index}", b"x") for index in range(5)]
        expected = [revision for revision in written if revision >= target]
        await recorder.wait_for(len(expected))
        marker = await store.put(prefix + "marker", b"")
        await recorder.wait_for_revision(marker)
    finally:
        await recorder.stop()
    assert [e.revision for e in recorder.events] == [*expected, marker]


async def test_a_watch_of_compacted_history_raises(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "k", b"1")
    await store.put(prefix + "k", b"2")
    third = await store.put(prefix + "k", b"3")

    await store.compact(third)
    await store.compact(first)  # compacting again, to an older revision, changes nothing

    with pytest.raises(CompactedError) as compacted:
        async for _ in store.watch(prefix, first):
            pass
    assert (compacted.value.requested, compacted.value.compacted) == (first, third)

    stream = store.watch(prefix, third)  # the compaction revision itself is kept
    try:
        event = await anext(stream)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    assert (event.key, event.value, event.revision) == (prefix + "k", b"3", third)


async def test_compacting_the_future_is_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.compact(await store.revision() + 1000)


async def test_closing_the_store_ends_its_watches_with_an_error(store: Store, prefix: str) -> None:
    first = await store.put(prefix + "a", b"1")
    recorder = WatchRecorder(store.watch(prefix, first))
    try:
        await recorder.wait_for(1)

        await store.close()

        with pytest.raises(StoreError, match="closed"):
            await recorder.wait_for(2)
        with pytest.raises(StoreError, match="closed"):
            await store.get(prefix + "a")
    finally:
        await recorder.stop()


# One operation of a random history: a put, a delete, or a txn of several distinct keys.
_KEYS = st.sampled_from(["a", "b", "c", "d/e"])
_VALUES = st.binary(max_size=8)
_OP = st.one_of(
    st.tuples(st.just("put"), _KEYS, _VALUES),
    st.tuples(st.just("delete"), _KEYS, st.just(b"")),
)
_STEP = st.one_of(
    _OP.map(lambda op: [op]),
    st.lists(_OP, min_size=2, max_size=3, unique_by=lambda op: op[1]),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_STEP, min_size=1, max_size=12), live_from=st.integers(0, 12))
async def test_a_watch_yields_exactly_the_writes_made(
    store: Store, prefix: str, steps: list[list[tuple[str, str, bytes]]], live_from: int
) -> None:
    """Whatever the writes, a watch from before them yields one event per change, in order.

    The watch starts after `live_from` steps, so the first ones come from history and the
    rest arrive live; the split must not show.
    """
    example = f"{prefix}{uuid.uuid4().hex[:8]}/"  # hypothesis reuses the fixtures
    start = await store.revision() + 1
    model: dict[str, int] = {}  # key -> create_revision, for the keys that exist
    expected: list[Event] = []
    recorder: WatchRecorder | None = None
    try:
        for index, step in enumerate(steps):
            if index == live_from:
                recorder = WatchRecorder(store.watch(example, start))
            ops: list[TxnOp] = [
                Put(example + key, value) if kind == "put" else Delete(example + key)
                for kind, key, value in step
            ]
            revision = (await store.txn([], ops)).revision
            for op in ops:
                if isinstance(op, Put):
                    created = model.setdefault(op.key, revision)
                    expected.append(Event("put", op.key, op.value, revision, created))
                elif model.pop(op.key, None) is not None:
                    expected.append(Event("delete", op.key, b"", revision))
        if recorder is None:
            recorder = WatchRecorder(store.watch(example, start))
        if expected:
            await recorder.wait_for(len(expected))
        # Nothing more may arrive: write a marker and check it is the very next event.
        marker = await store.put(example + "marker", b"")
        await recorder.wait_for_revision(marker)
    finally:
        if recorder is not None:
            await recorder.stop()
    assert recorder.events == [*expected, Event("put", example + "marker", b"", marker, marker)]


# --- leases ---------------------------------------------------------------------------


async def test_an_expired_lease_deletes_its_keys(store: Store, prefix: str) -> None:
    lease = await store.grant_lease(LEASE_TTL_S)
    first = await store.put(prefix + "w1", b"alive", lease=lease)
    await store.put(prefix + "w2", b"alive", lease=lease)
    await store.put(prefix + "keep", b"no lease")
    kv = await store.get(prefix + "w1")
    assert kv is not None
    assert kv.lease == lease

    recorder = WatchRecorder(store.watch(prefix, first))
    try:

        async def leased_keys_gone() -> bool:
            return [kv.key for kv in (await store.range(prefix)).kvs] == [prefix + "keep"]

        await eventually(leased_keys_gone, timeout=LEASE_GONE_WITHIN_S, what="lease expiry")
        events = await recorder.wait_for(5)
    finally:
        await recorder.stop()
    deletes = events[3:]
    assert {(e.type, e.key) for e in deletes} == {
        ("delete", prefix + "w1"),
        ("delete", prefix + "w2"),
    }
    assert deletes[0].revision == deletes[1].revision  # one expiry, one revision
    with pytest.raises(LeaseNotFound):
        await store.keep_alive(lease)


async def test_keep_alive_holds_a_key_past_its_ttl(store: Store, prefix: str) -> None:
    lease = await store.grant_lease(LEASE_TTL_S)
    await store.put(prefix + "heartbeat", b"alive", lease=lease)
    loop = asyncio.get_running_loop()
    hold_until = loop.time() + 2.5 * LEASE_TTL_S
    while loop.time() < hold_until:
        assert await store.keep_alive(lease) >= LEASE_TTL_S
        assert await store.get(prefix + "heartbeat") is not None
        await asyncio.sleep(LEASE_TTL_S / 4)  # the keep-alive cadence, not a wait
    assert await store.get(prefix + "heartbeat") is not None

    await store.revoke_lease(lease)
    assert await store.get(prefix + "heartbeat") is None


async def test_revoking_a_lease_deletes_its_keys_now(store: Store, prefix: str) -> None:
    lease = await store.grant_lease(30)
    await store.put(prefix + "a", b"1", lease=lease)
    await store.put(prefix + "b", b"1", lease=lease)

    await store.revoke_lease(lease)

    assert (await store.range(prefix)).kvs == []
    with pytest.raises(LeaseNotFound):
        await store.keep_alive(lease)
    await store.revoke_lease(lease)  # revoking again is harmless


async def test_a_put_with_an_unknown_lease_writes_nothing(store: Store, prefix: str) -> None:
    lease = await store.grant_lease(30)
    await store.revoke_lease(lease)

    with pytest.raises(LeaseNotFound):
        await store.put(prefix + "orphan", b"x", lease=lease)
    with pytest.raises(LeaseNotFound):
        await store.txn([], [Put(prefix + "orphan", b"x", lease=lease)])
    assert await store.get(prefix + "orphan") is None


async def test_a_lease_needs_a_positive_ttl(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.grant_lease(0)
