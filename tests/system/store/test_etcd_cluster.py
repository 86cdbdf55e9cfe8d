"""The etcd backend rides out the loss of a member.

A 3-member cluster of our own (the session's shared ones must stay whole): we kill the
leader, which is also the member the store talks to, while a watch is open and writes
go on, and show that writes, reads, keep-alives and the watch carry on with no event
lost or repeated. With every member gone, operations fail with `StoreUnavailable`
naming the endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from tests.support.etcd import EtcdCluster, EtcdLaunchError
from tests.support.polling import eventually
from tests.support.watching import WatchRecorder

from mycelium.store import Compare, EtcdStore, Put, StoreUnavailable

pytestmark = pytest.mark.system

WRITES_BEFORE_KILL = 30
WRITES_AFTER_KILL = 60


def _start(size: int) -> EtcdCluster:
    try:
        return EtcdCluster.start(size)
    except EtcdLaunchError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    started = _start(3)
    yield started
    started.stop()


@pytest.fixture
def single() -> Iterator[EtcdCluster]:
    started = _start(1)
    yield started
    started.stop()


async def test_losing_the_leader_loses_no_write_and_no_event(cluster: EtcdCluster) -> None:
    leader = cluster.leader_index()
    others = [e for i, e in enumerate(cluster.endpoints) if i != leader]
    store = await EtcdStore.open([cluster.endpoints[leader], *others])
    prefix = "/failover/"
    start = await store.revision() + 1
    lease = await store.grant_lease(2)
    recorder = WatchRecorder(store.watch(prefix, start))
    acknowledged: dict[str, int] = {}  # key -> the revision the store acknowledged

    async def write_forever() -> None:
        for index in range(1_000_000):
            key = f"{prefix}{index:06d}"
            acknowledged[key] = await store.put(key, str(index).encode())

    writer = asyncio.create_task(write_forever())
    try:
        await eventually(lambda: len(acknowledged) >= WRITES_BEFORE_KILL, what="writes")
        await recorder.wait_for(WRITES_BEFORE_KILL // 2)

        cluster.kill(leader)  # mid-stream: the writer and the watch are both busy

        target = len(acknowledged) + WRITES_AFTER_KILL
        await eventually(
            lambda: writer.done() or len(acknowledged) >= target,
            timeout=30,
            what="writes after the kill",
        )
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer  # (a write error would surface here instead)

        assert await store.keep_alive(lease) >= 1
        for key, revision in acknowledged.items():
            kv = await store.get(key)
            assert kv is not None, f"{key} was acknowledged at {revision} but is gone"
        listed = {kv.key for kv in (await store.range(prefix)).kvs}
        assert listed >= acknowledged.keys()

        await recorder.wait_for_revision(max(acknowledged.values()), timeout=15)
    finally:
        writer.cancel()
        await recorder.stop()

    live = recorder.events
    revisions = [event.revision for event in live]
    assert revisions == sorted(set(revisions)), "the watch repeated or reordered events"
    seen = {(event.key, event.revision) for event in live}
    assert set(acknowledged.items()) <= seen, "the watch lost acknowledged writes"

    # The surviving members' own history, read afresh, is exactly what the watch gave.
    replay = WatchRecorder(store.watch(prefix, start))
    try:
        await replay.wait_for_revision(revisions[-1])
    finally:
        await replay.stop()
    assert [e for e in replay.events if e.revision <= revisions[-1]] == live
    await store.close()


async def test_a_cas_cut_off_mid_request_is_applied_at_most_once(cluster: EtcdCluster) -> None:
    """A CAS put sent to a member that hangs is retried elsewhere; its compare fences it.

    On a loaded machine the retry itself can outlast its share of the deadline after
    the cluster applied it; the next retry then finds its own write and says so (the
    store cannot tell it from someone else's). Either way the write lands once."""
    leader = cluster.leader_index()
    follower = next(i for i in range(len(cluster.members)) if i != leader)
    others = [e for i, e in enumerate(cluster.endpoints) if i != follower]
    store = await EtcdStore.open([cluster.endpoints[follower], *others], timeout=3.0)
    observer = await EtcdStore.open([cluster.endpoints[leader]])
    try:
        created = await store.put("/cas/k", b"0")
        recorder = WatchRecorder(observer.watch("/cas/", created + 1))

        cluster.pause(follower)  # the next request reaches it, and hangs there
        try:
            updated = await store.put("/cas/k", b"1", expect_revision=created)
        except StoreUnavailable as exc:
            said = str(exc)
            assert "may be what changed the key" in said
            current = await observer.get("/cas/k")
            assert current is not None
            assert current.value == b"1"
            updated = current.mod_revision
        finally:
            cluster.resume(follower)

        # Whatever the resumed member does with the request it held, the compare fails.
        follower_view = await EtcdStore.open([cluster.endpoints[follower]])
        try:

            async def follower_caught_up() -> bool:
                kv = await follower_view.get("/cas/k")
                return kv is not None and kv.mod_revision >= updated

            await eventually(follower_caught_up, what="the resumed member catching up")
            marker = await follower_view.put("/cas/marker", b"")
        finally:
            await follower_view.close()
        await recorder.wait_for_revision(marker)
        await recorder.stop()
        assert [(e.key, e.value, e.revision) for e in recorder.events] == [
            ("/cas/k", b"1", updated),
            ("/cas/marker", b"", marker),
        ]
    finally:
        await store.close()
        await observer.close()


async def test_an_unfenced_txn_cut_off_mid_request_is_reported_not_retried(
    cluster: EtcdCluster,
) -> None:
    """A txn whose compare its own writes do not change could apply twice: it is not retried."""
    leader = cluster.leader_index()
    follower = next(i for i in range(len(cluster.members)) if i != leader)
    others = [e for i, e in enumerate(cluster.endpoints) if i != follower]
    store = await EtcdStore.open([cluster.endpoints[follower], *others], timeout=1.5)
    try:
        guard = await store.put("/unfenced/guard", b"")
        cluster.pause(follower)
        try:
            with pytest.raises(StoreUnavailable, match="may or may not have been applied"):
                await store.txn(
                    [Compare("/unfenced/guard", guard)], [Put("/unfenced/counter", b"+1")]
                )
        finally:
            cluster.resume(follower)
    finally:
        await store.close()


async def test_with_every_member_gone_operations_fail_naming_the_endpoints(
    single: EtcdCluster,
) -> None:
    store = await EtcdStore.open(single.endpoints, timeout=1.0)
    try:
        await store.put("/before", b"x")
        single.kill(0)

        with pytest.raises(StoreUnavailable, match=single.endpoints[0]):
            await store.get("/before")
        with pytest.raises(StoreUnavailable, match=single.endpoints[0]):
            async for _ in store.watch("/", 1):
                pass
    finally:
        await store.close()

    with pytest.raises(StoreUnavailable, match=single.endpoints[0]):
        await EtcdStore.open(single.endpoints, timeout=1.0)
