"""Which connected proxies a `myc tap` target names, and the relay's ends."""

from __future__ import annotations

import pytest
from tests.support.finished import tap_event

from mycelium.api.loading import load_documents
from mycelium.control.state import MeshState
from mycelium.control.tap import ActiveTap, TapTarget, TargetError, select
from mycelium.discovery import protocol as p

NODES = [
    p.NodeInfo(id="reviews-5d8f7c-0", workload="reviews-5d8f7c-0", labels={"app": "reviews"}),
    p.NodeInfo(id="reviews-5d8f7c-1", workload="reviews-5d8f7c-1", labels={"app": "reviews"}),
    p.NodeInfo(id="reviews-v2-9a1b2c-0", workload="reviews-v2-9a1b2c-0", labels={"app": "reviews"}),
    p.NodeInfo(id="ratings-77aa-0", workload="ratings-77aa-0", labels={"app": "ratings"}),
    p.NodeInfo(id="reviews-x-0", namespace="shop", workload="reviews-4f4f-0"),
    p.NodeInfo(id="ztunnel-node1", workload="reviews-1234-0", role="ztunnel"),
]


def _state(text: str = "") -> MeshState:
    state = MeshState()
    for resource in load_documents(text, source="test") if text else []:
        state.put(resource)
    return state


def _ids(
    target: str, namespace: str | None = "default", state: MeshState | None = None
) -> set[str]:
    chosen = select(TapTarget.parse(target), namespace, NODES, state or _state())
    return {node.id for node in chosen}


def test_a_deployment_is_its_pods_by_name_not_another_deployments() -> None:
    assert _ids("deploy/reviews") == {"reviews-5d8f7c-0", "reviews-5d8f7c-1"}
    assert _ids("deploy/reviews-v2") == {"reviews-v2-9a1b2c-0"}


def test_a_service_is_the_proxies_its_selector_matches() -> None:
    service = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""
    assert _ids("svc/reviews", state=_state(service)) == {
        "reviews-5d8f7c-0",
        "reviews-5d8f7c-1",
        "reviews-v2-9a1b2c-0",
    }
    assert _ids("svc/unknown") == set()


def test_a_pod_is_one_proxy_and_all_is_every_proxy_but_ztunnels() -> None:
    assert _ids("pod/ratings-77aa-0") == {"ratings-77aa-0"}
    assert _ids("all", None) == {n.id for n in NODES if n.role != "ztunnel"}
    assert _ids("deploy/reviews", "shop") == {"reviews-x-0"}


@pytest.mark.parametrize("text", ["reviews", "rs/reviews", "deploy/", ""])
def test_a_target_must_say_what_kind_it_is(text: str) -> None:
    with pytest.raises(TargetError, match="deploy/NAME"):
        TapTarget.parse(text)


async def test_the_relay_ends_at_max_across_proxies_and_when_every_proxy_ended() -> None:
    start = p.TapStart(id="t", max=3, seconds=10)
    a, b = NODES[0], NODES[1]
    tap = ActiveTap(start, [a, b])
    event = tap_event()
    tap.events(a, p.TapEvents(id="t", events=[event, event]))
    tap.events(b, p.TapEvents(id="t", events=[event, event], dropped=4))
    lines = [tap.lines.get_nowait() for _ in range(tap.lines.qsize())]
    assert [line["type"] for line in lines] == ["request"] * 3 + ["dropped", "end"]
    assert lines[2]["proxy"] == b.id
    assert lines[-1] == {"type": "end", "reason": "max", "requests": 3}

    other = ActiveTap(p.TapStart(id="u", seconds=10), [a, b])
    other.events(a, p.TapEvents(id="u", ended="deadline"))
    other.proxy_gone(b.id)
    assert other.ended == "deadline"  # b went away; a says why the tap is over
    mixed = ActiveTap(p.TapStart(id="v", seconds=10), [a, b])
    mixed.events(a, p.TapEvents(id="v", ended="stopped"))
    mixed.events(b, p.TapEvents(id="v", ended="too_many_taps"))
    assert mixed.ended == "proxies_ended"


def test_a_rollouts_new_pod_joins_the_tap_for_the_time_and_requests_left() -> None:
    now = [100.0]
    target = TapTarget.parse("deploy/reviews")
    old, new = (
        NODES[0],
        p.NodeInfo(id="reviews-77ee11-0", workload="reviews-77ee11-0", labels={"app": "reviews"}),
    )
    tap = ActiveTap(
        p.TapStart(id="t", max=5, seconds=60),
        [old],
        follows=lambda node: bool(select(target, "default", [node], _state())),
        clock=lambda: now[0],
    )
    tap.events(old, p.TapEvents(id="t", events=[tap_event(), tap_event()]))
    tap.proxy_gone(old.id)
    assert tap.ended is None  # the pods went away: their successors are awaited

    now[0] += 20
    assert tap.proxy_joined(NODES[3]) is None  # ratings: not the target
    joined = tap.proxy_joined(new)
    assert joined is not None
    assert (joined.id, joined.max, joined.seconds) == ("t", 3, 40)
    assert tap.proxy_joined(new) is None  # already tapping

    tap.events(new, p.TapEvents(id="t", events=[tap_event()] * 3))
    lines = [tap.lines.get_nowait() for _ in range(tap.lines.qsize())]
    kinds = [line["type"] for line in lines]
    assert kinds == ["request"] * 2 + ["proxy_ended", "proxy_joined"] + ["request"] * 3 + ["end"]
    assert lines[3]["workload"] == new.workload
    assert lines[-1] == {"type": "end", "reason": "max", "requests": 5}


def test_nothing_joins_a_tap_after_its_time_or_a_tap_of_fixed_proxies() -> None:
    now = [0.0]
    late = ActiveTap(
        p.TapStart(id="t", seconds=10), [NODES[0]], follows=lambda _n: True, clock=lambda: now[0]
    )
    now[0] = 11
    assert late.proxy_joined(NODES[1]) is None
    fixed = ActiveTap(p.TapStart(id="u", seconds=10), [NODES[0]])
    assert fixed.proxy_joined(NODES[1]) is None
    fixed.proxy_gone(NODES[0].id)
    assert fixed.ended == "disconnected"


def test_a_proxy_sending_more_than_the_taps_rate_is_held_to_it() -> None:
    now = [0.0]
    tapped = NODES[0]
    tap = ActiveTap(p.TapStart(id="t", seconds=60, rate=10), [tapped], clock=lambda: now[0])
    burst = 10 + p.MAX_TAP_BATCH  # a second's worth, plus a batch the clocks disagree on

    over = tap.events(tapped, p.TapEvents(id="t", events=[tap_event()] * p.MAX_TAP_BATCH))
    over += tap.events(tapped, p.TapEvents(id="t", events=[tap_event()] * p.MAX_TAP_BATCH))
    assert over == 2 * p.MAX_TAP_BATCH - burst
    assert tap.sent == burst
    now[0] += 1.0  # a second later, ten more are due
    assert tap.events(tapped, p.TapEvents(id="t", events=[tap_event()] * 15)) == 5
    assert tap.sent == burst + 10
