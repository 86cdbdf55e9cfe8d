"""Least request: power of two choices on requests in flight, adjusted by weight."""

import random
from collections import Counter

import pytest

from mycelium.proxy.upstream.balancers import LeastRequest
from mycelium.proxy.upstream.endpoint import EndpointState


def endpoints(*weights: int) -> list[EndpointState]:
    return [
        EndpointState(address=f"198.18.0.{i + 1}", port=9080, weight=w)
        for i, w in enumerate(weights)
    ]


def pick_index(balancer: LeastRequest, eps: list[EndpointState]) -> int:
    chosen = balancer.pick(eps, now=0.0)
    assert chosen is not None
    return eps.index(chosen)


def test_idle_equal_endpoints_share_evenly() -> None:
    eps = endpoints(1, 1, 1)
    balancer = LeastRequest(random.Random(11))
    counts = Counter(pick_index(balancer, eps) for _ in range(10_000))
    for i in range(3):
        assert counts[i] == pytest.approx(10_000 / 3, rel=0.05)


def test_the_busy_endpoint_is_avoided() -> None:
    eps = endpoints(1, 1, 1)
    eps[1].in_flight = 10
    balancer = LeastRequest(random.Random(12))
    counts = Counter(pick_index(balancer, eps) for _ in range(10_000))
    assert counts[1] == 0  # two distinct candidates: the busy one always loses
    assert counts[0] == pytest.approx(5000, rel=0.05)


def test_idle_endpoints_get_traffic_in_proportion_to_weight() -> None:
    eps = endpoints(3, 1)
    balancer = LeastRequest(random.Random(13))
    counts = Counter(pick_index(balancer, eps) for _ in range(10_000))
    assert counts[0] / 10_000 == pytest.approx(0.75, abs=0.02)


def test_load_is_compared_per_unit_of_weight() -> None:
    eps = endpoints(3, 1)
    balancer = LeastRequest(random.Random(14))
    eps[0].in_flight, eps[1].in_flight = 4, 1  # 4/3 > 1/1: the light one is less loaded
    mixed = [pick_index(balancer, eps) for _ in range(2000)]
    # Only a draw of the heavy endpoint twice can pick it (9/16 of draws).
    assert Counter(mixed)[1] / 2000 == pytest.approx(7 / 16, abs=0.04)
    eps[0].in_flight = 2  # 2/3 < 1/1: now the heavy one is less loaded
    assert Counter(pick_index(balancer, eps) for _ in range(2000))[1] / 2000 == pytest.approx(
        1 / 16, abs=0.02
    )


def test_under_sustained_load_concurrency_follows_the_weights() -> None:
    # A closed loop of 40 concurrent requests; whichever finishes first is replaced.
    rng = random.Random(15)
    eps = endpoints(3, 1)
    balancer = LeastRequest(rng)
    outstanding: list[EndpointState] = []
    tally = Counter[int]()
    for _ in range(20_000):
        while len(outstanding) < 40:
            chosen = balancer.pick(eps, now=0.0)
            assert chosen is not None
            chosen.in_flight += 1
            outstanding.append(chosen)
        done = outstanding.pop(rng.randrange(len(outstanding)))
        done.in_flight -= 1
        tally[eps.index(done)] += 1
    assert tally[0] / sum(tally.values()) == pytest.approx(0.75, abs=0.03)


def test_one_or_no_endpoint_needs_no_choice() -> None:
    balancer = LeastRequest(random.Random(1))
    assert balancer.pick([], now=0.0) is None
    only = endpoints(1)
    assert balancer.pick(only, now=0.0) is only[0]
