"""Consistent hashing: a key sticks to its endpoint, and a change of membership moves
only the keys it must (about 1/n of them)."""

import random
from collections import Counter

import pytest

from mycelium.proxy.upstream.balancers import ConsistentHash, hash_key_point, ring_points
from mycelium.proxy.upstream.endpoint import EndpointState

KEYS = [f"user-{i}".encode() for i in range(10_000)]


def endpoints(count: int, first: int = 1, weight: int = 1) -> list[EndpointState]:
    return [
        EndpointState(address=f"198.18.0.{i}", port=9080, weight=weight)
        for i in range(first, first + count)
    ]


def assignment(balancer: ConsistentHash, eps: list[EndpointState]) -> dict[bytes, str]:
    out = {}
    for key in KEYS:
        chosen = balancer.pick(eps, now=0.0, hash_key=key)
        assert chosen is not None
        out[key] = chosen.key
    return out


def test_the_same_key_always_reaches_the_same_endpoint() -> None:
    eps = endpoints(5)
    balancer = ConsistentHash(random.Random(1))
    first = balancer.pick(eps, now=0.0, hash_key=b"session-42")
    assert all(balancer.pick(eps, now=0.0, hash_key=b"session-42") is first for _ in range(100))


def test_every_proxy_agrees_whatever_its_random_seed() -> None:
    eps = endpoints(5)
    one = assignment(ConsistentHash(random.Random(1)), eps)
    other = assignment(ConsistentHash(random.Random(99)), endpoints(5))
    assert one == other


def test_keys_spread_across_endpoints_near_evenly() -> None:
    eps = endpoints(10)
    counts = Counter(assignment(ConsistentHash(random.Random(2)), eps).values())
    assert len(counts) == 10
    for share in counts.values():
        assert share == pytest.approx(1000, rel=0.3)


def test_removing_one_endpoint_of_ten_moves_only_its_own_keys() -> None:
    eps = endpoints(10)
    balancer = ConsistentHash(random.Random(3))
    before = assignment(balancer, eps)
    gone = eps[4]
    after = assignment(balancer, [e for e in eps if e is not gone])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == gone.key}
    assert len(moved) / len(KEYS) == pytest.approx(1 / 10, abs=0.04)


def test_adding_an_endpoint_moves_about_one_in_n_keys_all_to_the_newcomer() -> None:
    eps = endpoints(10)
    balancer = ConsistentHash(random.Random(4))
    before = assignment(balancer, eps)
    newcomer = endpoints(1, first=50)[0]
    after = assignment(balancer, [*eps, newcomer])
    moved = [k for k in KEYS if before[k] != after[k]]
    assert {after[k] for k in moved} == {newcomer.key}
    assert len(moved) / len(KEYS) == pytest.approx(1 / 11, abs=0.04)


def test_reordering_the_endpoints_changes_nothing() -> None:
    eps = endpoints(6)
    balancer = ConsistentHash(random.Random(5))
    assert assignment(balancer, eps) == assignment(balancer, list(reversed(eps)))


def test_a_heavier_endpoint_owns_a_larger_share_of_keys() -> None:
    eps = [*endpoints(2), *endpoints(1, first=10, weight=2)]
    counts = Counter(assignment(ConsistentHash(random.Random(6)), eps).values())
    assert counts[eps[2].key] / len(KEYS) == pytest.approx(0.5, abs=0.06)


def test_the_ring_is_built_once_per_endpoint_set() -> None:
    eps = endpoints(4)
    balancer = ConsistentHash(random.Random(7))
    for _ in range(100):
        balancer.pick(eps, now=0.0, hash_key=b"k")
    assert balancer.ring_builds == 1
    balancer.pick(list(eps), now=0.0, hash_key=b"k")  # an equal set in a new list
    assert balancer.ring_builds == 1
    balancer.pick(eps[:3], now=0.0, hash_key=b"k")  # one ejected
    balancer.pick(eps, now=0.0, hash_key=b"k")  # and back
    assert balancer.ring_builds == 2


def test_a_weight_change_in_place_rebuilds_the_ring() -> None:
    eps = endpoints(3)
    balancer = ConsistentHash(random.Random(8))
    balancer.pick(eps, now=0.0, hash_key=b"k")
    eps[0].weight = 5
    balancer.pick(eps, now=0.0, hash_key=b"k")
    assert balancer.ring_builds == 2


def test_without_a_hash_key_it_falls_back_to_round_robin() -> None:
    eps = endpoints(3)
    balancer = ConsistentHash(random.Random(9))
    picks = [balancer.pick(eps, now=0.0) for _ in range(6)]
    assert Counter(p.key for p in picks if p is not None) == {e.key: 2 for e in eps}


def test_the_hashes_are_pinned_so_proxies_of_every_version_agree() -> None:
    # BLAKE2b, not Python's salted hash(): another process must place keys identically.
    assert hash_key_point(b"user-1") == 0x88E1EA21865AAC9A
    assert ring_points("198.18.0.1:9080", 2) == [0xCD03F36161052B5D, 0x981D413E8951F127]


def test_an_empty_cluster_gives_none() -> None:
    assert ConsistentHash(random.Random(1)).pick([], now=0.0, hash_key=b"k") is None
