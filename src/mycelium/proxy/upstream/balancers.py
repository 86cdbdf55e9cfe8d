"""Load balancers: which endpoint of a cluster gets the next request.

Every balancer has one method, `pick(endpoints, *, now, hash_key=None)`, given the
cluster's *available* endpoints (healthy, not ejected) and returning one of them, or
None for an empty sequence. They are sans-IO: the time is passed in and randomness comes
from the `random.Random` they were built with, so a seeded generator replays exactly.

Per-pick cost is O(1) or O(log n). What a balancer derives from the endpoint set (a
weight table, a round-robin cycle, a hash ring) is built once per set and cached:

- the fast path recognises the very same sequence object, of the same length, with no
  endpoint's weight or health changed since (`EndpointState.epoch`);
- otherwise the set's fingerprint (the endpoint keys and weights, in order) is looked up
  among the few most recent builds, so an endpoint that is ejected and comes back, or a
  caller that rebuilds an equal list, costs an O(n) fingerprint but no rebuild.

Derived tables hold indices into the sequence rather than the endpoints themselves, so
they stay valid for any sequence with the same fingerprint. Callers must therefore not
mutate a sequence in place after passing it: pass a new one when the set changes (the
outlier detector's `available` does).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

from mycelium.discovery.config import BalancerKind
from mycelium.errors import ConfigError
from mycelium.proxy.upstream.endpoint import EndpointState

type Fingerprint = tuple[tuple[str, int], ...]

# Recent builds kept per balancer: the full set plus a few "one endpoint ejected"
# variants, so ejections that come and go do not rebuild anything.
_RECENT_BUILDS = 8


class Balancer(Protocol):
    """Chooses one of a cluster's available endpoints for the next request."""

    def pick(
        self, endpoints: Sequence[EndpointState], *, now: float, hash_key: bytes | None = None
    ) -> EndpointState | None:
        """One of `endpoints`, or None when it is empty. `now` is monotonic seconds;
        `hash_key` is the request's affinity key (only consistent hashing reads it)."""
        ...


def _fingerprint(endpoints: Sequence[EndpointState]) -> Fingerprint:
    return tuple([(e.key, e.weight) for e in endpoints])


class _PerEndpointSet[T]:
    """A value derived from an endpoint sequence, rebuilt only when the set changes."""

    __slots__ = ("_build", "_epoch", "_length", "_recent", "_sequence", "_value", "builds")

    def __init__(self, build: Callable[[Sequence[EndpointState]], T]) -> None:
        self._build = build
        self._sequence: Sequence[EndpointState] | None = None
        self._length = -1
        self._epoch = -1
        self._value: T  # set by the first `get`, before the fast path can match
        self._recent: dict[Fingerprint, T] = {}
        self.builds = 0  # how many times `build` ran (metrics, tests)

    def get(self, endpoints: Sequence[EndpointState]) -> T:
        if (
            endpoints is self._sequence
            and len(endpoints) == self._length
            and EndpointState.epoch == self._epoch
        ):
            return self._value
        fingerprint = _fingerprint(endpoints)
        value = self._recent.pop(fingerprint, None)
        if value is None:
            value = self._build(endpoints)
            self.builds += 1
            if len(self._recent) >= _RECENT_BUILDS:
                del self._recent[next(iter(self._recent))]
        self._recent[fingerprint] = value  # (re)inserted last: most recently used
        self._sequence = endpoints
        self._length = len(endpoints)
        self._epoch = EndpointState.epoch
        self._value = value
        return value


# --- round robin ----------------------------------------------------------------------

# The longest round-robin cycle kept. Weights are first divided by their greatest common
# divisor; a set whose weights still add up to more is scaled down to fit, which keeps
# the proportions to within one part in this many.
MAX_ROUND_ROBIN_CYCLE = 4096


def smooth_weighted_cycle(weights: Sequence[int]) -> list[int]:
    """One full cycle of nginx's smooth weighted round robin, as indices into `weights`.

    Each step adds every weight to its endpoint's running score, picks the highest score
    (the first on a tie) and takes the total weight off the winner. Over one cycle each
    endpoint appears exactly `weight` times, spread out: 3:1 gives a, a, b, a rather than
    a, a, a, b.
    """
    if not weights:
        return []
    divisor = math.gcd(*weights)
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    if total > MAX_ROUND_ROBIN_CYCLE:
        scale = MAX_ROUND_ROBIN_CYCLE / total
        reduced = [max(1, int(w * scale)) for w in reduced]
        total = sum(reduced)
    scores = [0] * len(reduced)
    indices = range(len(reduced))
    cycle: list[int] = []
    for _ in range(total):
        best = 0
        best_score = scores[0] + reduced[0]
        scores[0] = best_score
        for i in indices[1:]:
            score = scores[i] + reduced[i]
            scores[i] = score
            if score > best_score:
                best, best_score = i, score
        scores[best] -= total
        cycle.append(best)
    return cycle


class _Cycle:
    __slots__ = ("order", "position")

    def __init__(self, order: list[int], position: int) -> None:
        self.order = order
        self.position = position


class RoundRobin:
    """Smooth weighted round robin (nginx's), O(1) per pick.

    The cycle for an endpoint set is computed once (its length is the sum of the
    weights after dividing by their gcd, at most `MAX_ROUND_ROBIN_CYCLE`) and walked one
    step per pick. Each new set starts at a random point of its cycle, so that proxies
    that start together do not all send their first request to the same endpoint.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._cycles = _PerEndpointSet(self._build)

    def _build(self, endpoints: Sequence[EndpointState]) -> _Cycle:
        order = smooth_weighted_cycle([e.weight for e in endpoints])
        return _Cycle(order, int(self._rng.random() * len(order)) if order else 0)

    def pick(
        self, endpoints: Sequence[EndpointState], *, now: float, hash_key: bytes | None = None
    ) -> EndpointState | None:
        if not endpoints:
            return None
        cycle = self._cycles.get(endpoints)
        position = cycle.position
        cycle.position = position + 1 if position + 1 < len(cycle.order) else 0
        return endpoints[cycle.order[position]]


# --- power of two choices ---------------------------------------------------------------


class _WeightTable:
    """Cumulative weights for drawing an index with probability weight / total weight;
    `cumulative` is None when all weights are equal (a plain uniform draw)."""

    __slots__ = ("cumulative", "total")

    def __init__(self, endpoints: Sequence[EndpointState]) -> None:
        weights = [e.weight for e in endpoints]
        if len(set(weights)) <= 1:
            self.cumulative: list[int] | None = None
            self.total = len(weights)
        else:
            self.cumulative = list(itertools.accumulate(weights))
            self.total = self.cumulative[-1]


class _PowerOfTwoChoices:
    """Draws two candidates and keeps the less loaded one; subclasses say what "load" is.

    Candidates are drawn in proportion to weight (two distinct endpoints when all
    weights are equal, independent draws otherwise); on a tie of loads a coin decides.
    So endpoints that are equally loaded (an idle cluster, say) get traffic exactly in
    proportion to their weights, while load, whenever it differs, picks the winner.
    """

    def __init__(self, rng: random.Random) -> None:
        self._random = rng.random
        self._tables = _PerEndpointSet(_WeightTable)

    def _two(self, endpoints: Sequence[EndpointState]) -> tuple[EndpointState, EndpointState]:
        n = len(endpoints)
        table = self._tables.get(endpoints)
        draw = self._random
        cumulative = table.cumulative
        if cumulative is None:
            i = int(draw() * n)
            j = int(draw() * (n - 1))
            if j >= i:
                j += 1
        else:
            total = table.total
            i = bisect.bisect_right(cumulative, draw() * total)
            j = bisect.bisect_right(cumulative, draw() * total)
        return endpoints[i], endpoints[j]


class LeastRequest(_PowerOfTwoChoices):
    """Power of two choices on requests in flight, weight-adjusted as Envoy does.

    Of the two candidates, the one with the lower `in_flight / weight` wins: under
    sustained load endpoints carry concurrency in proportion to their weights. An
    endpoint busier than the rest is only chosen when both draws land on it (never, with
    equal weights, since the draws are then distinct).
    """

    def pick(
        self, endpoints: Sequence[EndpointState], *, now: float, hash_key: bytes | None = None
    ) -> EndpointState | None:
        if len(endpoints) < 2:
            return endpoints[0] if endpoints else None
        a, b = self._two(endpoints)
        # in_flight / weight compared by cross-multiplying: exact integers, no division.
        load_a = a.in_flight * b.weight
        load_b = b.in_flight * a.weight
        if load_a < load_b:
            return a
        if load_b < load_a:
            return b
        return a if self._random() < 0.5 else b


# What a request in flight to an endpoint that has not answered yet costs, in seconds of
# latency. Finagle's rule: an endpoint no one has heard from costs nothing while idle, so
# the first request probes it at once; while that probe is out, this penalty keeps more
# requests off it unless every alternative is slower than a second.
UNOBSERVED_PENALTY_SECONDS = 1.0


class PeakEwma(_PowerOfTwoChoices):
    """Linkerd's default balancer: power of two choices on a peak-EWMA latency cost.

    An endpoint's cost is its latency estimate times the requests it would then have in
    flight: `cost = latency.estimate(now) * (in_flight + 1)`. The estimate (see
    `PeakEwmaLatency`: Finagle's peak-EWMA, decay 10 s by default) jumps to a slower
    response at once and comes down gradually, so a slowing endpoint loses traffic
    within a response or two; with no traffic its estimate fades, so it is tried again
    later and regains its share once its answers are fast. Multiplying by
    `in_flight + 1` spreads a burst instead of sending it all to the fastest endpoint.
    An endpoint with no response yet costs `penalty_seconds * in_flight` (nothing when
    idle). The lower cost of the two candidates wins.
    """

    def __init__(
        self, rng: random.Random, *, penalty_seconds: float = UNOBSERVED_PENALTY_SECONDS
    ) -> None:
        super().__init__(rng)
        self.penalty_seconds = penalty_seconds

    def cost(self, endpoint: EndpointState, now: float) -> float:
        """What sending the next request to `endpoint` is expected to cost (seconds)."""
        latency = endpoint.latency
        if latency.observations:
            return latency.estimate(now) * (endpoint.in_flight + 1)
        return self.penalty_seconds * endpoint.in_flight

    def pick(
        self, endpoints: Sequence[EndpointState], *, now: float, hash_key: bytes | None = None
    ) -> EndpointState | None:
        if len(endpoints) < 2:
            return endpoints[0] if endpoints else None
        a, b = self._two(endpoints)
        if a is b:
            return a
        # `cost` inlined: this runs on every request.
        latency = a.latency
        if latency.observations:
            cost_a = latency.estimate(now) * (a.in_flight + 1)
        else:
            cost_a = self.penalty_seconds * a.in_flight
        latency = b.latency
        if latency.observations:
            cost_b = latency.estimate(now) * (b.in_flight + 1)
        else:
            cost_b = self.penalty_seconds * b.in_flight
        if cost_a < cost_b:
            return a
        if cost_b < cost_a:
            return b
        return a if self._random() < 0.5 else b


# --- consistent hashing -----------------------------------------------------------------

# Ring points per unit of weight. The share of keys an endpoint receives varies by about
# 1/sqrt(points) around its fair share: 160 points keep that near 8 %, and a ring of
# 100 endpoints (16,000 points) builds in a few milliseconds.
RING_POINTS_PER_WEIGHT = 160
# Beyond this many points the per-endpoint counts are scaled down (heavy weights on a
# large cluster); the ring then no longer grows with the weights, balance suffers little.
MAX_RING_POINTS = 1 << 17

_POINTS_PER_DIGEST = 8  # a 64-byte BLAKE2b digest yields eight 64-bit ring points
_UNPACK_POINTS = struct.Struct("<8Q").unpack


def hash_key_point(hash_key: bytes) -> int:
    """Where a request's hash key falls on the ring: the same on every proxy and run."""
    return int.from_bytes(hashlib.blake2b(hash_key, digest_size=8).digest(), "little")


def ring_points(key: str, count: int) -> list[int]:
    """An endpoint's `count` points on the ring."""
    # Points depend on the endpoint key alone (never on the set): adding or removing
    # one endpoint leaves every other endpoint's points where they were.
    points: list[int] = []
    for block in range((count + _POINTS_PER_DIGEST - 1) // _POINTS_PER_DIGEST):
        digest = hashlib.blake2b(f"{key}#{block}".encode(), digest_size=64).digest()
        points.extend(_UNPACK_POINTS(digest))
    return points[:count]


class _Ring:
    __slots__ = ("owners", "points")

    def __init__(self, endpoints: Sequence[EndpointState]) -> None:
        counts = [e.weight * RING_POINTS_PER_WEIGHT for e in endpoints]
        total = sum(counts)
        if total > MAX_RING_POINTS:
            counts = [max(1, c * MAX_RING_POINTS // total) for c in counts]
        placed = sorted(
            (point, index)
            for index, (e, count) in enumerate(zip(endpoints, counts, strict=True))
            for point in ring_points(e.key, count)
        )
        self.points = [p for p, _ in placed]
        self.owners = [i for _, i in placed]


class ConsistentHash:
    """A hash ring with virtual nodes: the same key goes to the same endpoint.

    The key (a header value, a cookie value, the source IP — the caller derives it) is
    hashed onto a 64-bit ring; the endpoint owning the next point clockwise gets it.
    Each endpoint owns `RING_POINTS_PER_WEIGHT * weight` points derived from its key
    alone, so when one endpoint of n joins or leaves, only the keys it gains or loses
    move: about 1/n of them, the rest stay put. A pick is a binary search.

    Why a ring rather than Maglev: a ring moves no key it need not move, which is the
    property callers rely on for session or cache affinity, and it builds in O(points)
    hashes; Maglev balances better but moves a few extra keys on every change and needs
    a 65,537-entry table per set, which is slow to fill in Python.

    Without a hash key (the request has no such header, say) it falls back to round
    robin.
    """

    def __init__(self, rng: random.Random) -> None:
        self._fallback = RoundRobin(rng)
        self._rings = _PerEndpointSet(_Ring)

    @property
    def ring_builds(self) -> int:
        return self._rings.builds

    def pick(
        self, endpoints: Sequence[EndpointState], *, now: float, hash_key: bytes | None = None
    ) -> EndpointState | None:
        if not endpoints:
            return None
        if hash_key is None:
            return self._fallback.pick(endpoints, now=now)
        ring = self._rings.get(endpoints)
        slot = bisect.bisect_left(ring.points, hash_key_point(hash_key))
        if slot == len(ring.points):
            slot = 0  # past the last point: wrap around to the first
        return endpoints[ring.owners[slot]]


def build_balancer(kind: BalancerKind, rng: random.Random) -> Balancer:
    """The balancer a cluster's `balancer` setting names."""
    if kind == "ROUND_ROBIN":
        return RoundRobin(rng)
    if kind == "LEAST_REQUEST":
        return LeastRequest(rng)
    if kind == "P2C_EWMA":
        return PeakEwma(rng)
    if kind == "CONSISTENT_HASH":
        return ConsistentHash(rng)
    raise ConfigError(
        f"unknown load balancer {kind!r}: use ROUND_ROBIN, LEAST_REQUEST, P2C_EWMA "
        "or CONSISTENT_HASH in the DestinationPolicy"
    )
