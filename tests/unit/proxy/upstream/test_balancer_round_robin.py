"""Smooth weighted round robin: weights respected exactly, without bursts."""

import random
from collections import Counter

from mycelium.proxy.upstream.balancers import RoundRobin, smooth_weighted_cycle
from mycelium.proxy.upstream.endpoint import EndpointState


def endpoints(*weights: int) -> list[EndpointState]:
    return [
        EndpointState(address=f"198.18.0.{i + 1}", port=9080, weight=w)
        for i, w in enumerate(weights)
    ]


def pick_index(balancer: RoundRobin, eps: list[EndpointState]) -> int:
    chosen = balancer.pick(eps, now=0.0)
    assert chosen is not None
    return eps.index(chosen)


def is_rotation_of(seen: list[int], cycle: list[int]) -> bool:
    return any(
        all(seen[k] == cycle[(start + k) % len(cycle)] for k in range(len(seen)))
        for start in range(len(cycle))
    )


def test_weights_three_to_one_interleave_as_a_a_b_a() -> None:
    assert smooth_weighted_cycle([3, 1]) == [0, 0, 1, 0]
    assert smooth_weighted_cycle([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]


def test_picks_walk_the_cycle_from_a_random_starting_point() -> None:
    eps = endpoints(3, 1)
    starts = set()
    for seed in range(8):
        balancer = RoundRobin(random.Random(seed))
        seen = [pick_index(balancer, eps) for _ in range(12)]
        assert is_rotation_of(seen, [0, 0, 1, 0])
        starts.add(tuple(seen[:4]))
    assert len(starts) > 1  # proxies started together do not march in step


def test_ten_thousand_picks_split_exactly_by_weight() -> None:
    eps = endpoints(5, 3, 2)
    balancer = RoundRobin(random.Random(1))
    counts = Counter(pick_index(balancer, eps) for _ in range(10_000))
    assert counts == {0: 5000, 1: 3000, 2: 2000}


def test_equal_weights_visit_every_endpoint_once_per_round() -> None:
    eps = endpoints(1, 1, 1, 1)
    balancer = RoundRobin(random.Random(3))
    for _ in range(5):
        assert {pick_index(balancer, eps) for _ in range(4)} == {0, 1, 2, 3}


def test_common_factors_are_divided_out_so_the_cycle_stays_short() -> None:
    assert smooth_weighted_cycle([300, 100]) == [0, 0, 1, 0]


def test_huge_weights_are_scaled_to_a_bounded_cycle_that_keeps_proportions() -> None:
    cycle = smooth_weighted_cycle([100_003, 50_001, 1])
    assert len(cycle) <= 4096
    counts = Counter(cycle)
    assert abs(counts[0] / counts[1] - 2.0) < 0.01
    assert counts[2] >= 1


def test_an_empty_cluster_gives_none() -> None:
    assert RoundRobin(random.Random(1)).pick([], now=0.0) is None


def test_a_weight_changed_in_place_takes_effect_on_the_next_pick() -> None:
    eps = endpoints(1, 1)
    balancer = RoundRobin(random.Random(5))
    pick_index(balancer, eps)
    eps[0].weight = 3
    counts = Counter(pick_index(balancer, eps) for _ in range(400))
    assert counts == {0: 300, 1: 100}


def test_a_new_endpoint_set_gets_its_own_cycle() -> None:
    eps = endpoints(1, 1, 1)
    balancer = RoundRobin(random.Random(5))
    assert {pick_index(balancer, eps) for _ in range(3)} == {0, 1, 2}
    fewer = eps[:2]
    assert {pick_index(balancer, fewer) for _ in range(4)} == {0, 1}
