"""The drain pair: a trigger says "drain" once, watchers hear it and let go, and the
trigger's wait ends with the last release, without polling. `DrainSet` is the pair for
work kept in a set: the drain waits for it to empty."""

from __future__ import annotations

import asyncio

import pytest

from mycelium.net.drain import DrainSet, DrainTrigger

PROMPTLY = 2.0  # seconds: a deadline for waits that should end at once


async def test_released_returns_at_once_when_nothing_is_held() -> None:
    trigger = DrainTrigger()
    trigger.start()
    await asyncio.wait_for(trigger.released(), PROMPTLY)


async def test_the_last_release_ends_the_wait() -> None:
    trigger = DrainTrigger()
    first, second = trigger.watcher(), trigger.watcher()
    trigger.start()
    waiting = asyncio.create_task(trigger.released())

    first.release()
    await asyncio.sleep(0)  # let the waiter run: it must still be waiting
    assert not waiting.done()
    second.release()

    await asyncio.wait_for(waiting, PROMPTLY)
    assert trigger.held == 0


async def test_watchers_hear_the_drain_once_through_callbacks_and_waits() -> None:
    trigger = DrainTrigger()
    watcher = trigger.watcher()
    heard: list[str] = []
    watcher.on_drain(lambda: heard.append("callback"))
    waiting = asyncio.create_task(watcher.wait())
    assert not watcher.draining

    trigger.start()
    trigger.start()  # a second start changes nothing

    await asyncio.wait_for(waiting, PROMPTLY)
    assert heard == ["callback"]
    assert watcher.draining


async def test_a_watcher_registered_during_the_drain_is_called_at_once() -> None:
    trigger = DrainTrigger()
    trigger.start()
    heard: list[str] = []
    with trigger.watcher() as watcher:
        watcher.on_drain(lambda: heard.append("late"))
        assert heard == ["late"]
    assert trigger.held == 0  # the context manager released it


async def test_a_released_watcher_is_not_called() -> None:
    trigger = DrainTrigger()
    watcher = trigger.watcher()
    watcher.on_drain(pytest.fail)
    watcher.release()
    watcher.release()  # twice: still one release
    trigger.start()
    assert trigger.held == 0


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    trigger = DrainTrigger()
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug in one connection")

    trigger.watcher().on_drain(broken)
    trigger.watcher().on_drain(lambda: heard.append("still called"))
    trigger.start()
    assert heard == ["still called"]


async def test_a_drain_set_holds_the_drain_until_it_is_empty() -> None:
    trigger = DrainTrigger()
    closed: list[str] = []
    connections: DrainSet[str] = DrainSet(trigger, closed.append)
    connections.add("a")
    connections.add("b")
    connections.add("b")  # already a member: nothing changes
    assert (len(connections), trigger.held) == (2, 1)

    trigger.start()
    assert sorted(closed) == ["a", "b"]
    waiting = asyncio.create_task(trigger.released())
    connections.discard("a")
    await asyncio.sleep(0)
    assert not waiting.done()
    connections.discard("b")
    await asyncio.wait_for(waiting, PROMPTLY)
    assert not connections


async def test_a_member_joining_during_the_drain_is_drained_as_it_joins() -> None:
    trigger = DrainTrigger()
    closed: list[str] = []
    relays: DrainSet[str] = DrainSet(trigger, closed.append)
    relays.add("old")
    trigger.start()
    relays.add("new")  # the set already holds the drain
    relays.discard("old")
    relays.discard("new")
    relays.add("newest")  # an empty set during the drain takes a watcher again
    assert closed == ["old", "new", "newest"]
    assert "newest" in relays
    assert list(relays) == ["newest"]
    assert trigger.held == 1
