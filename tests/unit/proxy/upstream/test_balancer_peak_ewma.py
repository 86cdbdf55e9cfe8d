"""Peak-EWMA: load moves off a slow endpoint within a few responses, and back after
it recovers and its bad record has decayed."""

import heapq
import random
from collections import Counter
from collections.abc import Callable

import pytest

from mycelium.proxy.upstream.balancers import PeakEwma
from mycelium.proxy.upstream.endpoint import EndpointState


def endpoints(*weights: int) -> list[EndpointState]:
    return [
        EndpointState(address=f"198.18.0.{i + 1}", port=9080, weight=w)
        for i, w in enumerate(weights)
    ]


class OpenLoop:
    """Requests arrive every `gap` seconds of simulated time; each endpoint answers
    after the latency `service(index, now)` says, jittered by +-20 %."""

    def __init__(self, eps: list[EndpointState], seed: int, gap: float = 0.01) -> None:
        self.eps = eps
        self.rng = random.Random(seed)
        self.balancer = PeakEwma(random.Random(seed + 1))
        self.gap = gap
        self.now = 0.0
        self._done: list[tuple[float, int, float]] = []  # (finish time, index, latency)

    def run_until(self, end: float, service: Callable[[int, float], float]) -> Counter[int]:
        picks = Counter[int]()
        while self.now < end:
            while self._done and self._done[0][0] <= self.now:
                at, index, latency = heapq.heappop(self._done)
                self.eps[index].request_finished(at, latency, ok=True)
            chosen = self.balancer.pick(self.eps, now=self.now)
            assert chosen is not None
            index = self.eps.index(chosen)
            chosen.request_started(self.now)
            latency = service(index, self.now) * self.rng.uniform(0.8, 1.2)
            heapq.heappush(self._done, (self.now + latency, index, latency))
            picks[index] += 1
            self.now += self.gap
        return picks


def test_healthy_endpoints_of_equal_speed_share_the_load() -> None:
    loop = OpenLoop(endpoints(1, 1, 1), seed=1)
    picks = loop.run_until(30.0, lambda _i, _t: 0.005)
    for i in range(3):
        assert picks[i] / picks.total() == pytest.approx(1 / 3, abs=0.06)


def test_load_leaves_a_slow_endpoint_and_returns_after_it_recovers() -> None:
    loop = OpenLoop(endpoints(1, 1, 1), seed=2)

    def slow_between(start: float, end: float) -> Callable[[int, float], float]:
        return lambda i, t: 0.100 if i == 2 and start <= t < end else 0.005

    service = slow_between(30.0, 60.0)
    loop.run_until(30.0, service)
    # The first few slow answers are enough: a handful of requests, then nearly nothing.
    first_second = loop.run_until(31.0, service)
    assert first_second[2] <= 8
    rest_of_slow_spell = loop.run_until(60.0, service)
    assert rest_of_slow_spell[2] / rest_of_slow_spell.total() < 0.01
    # Recovered at 60 s: its estimate has to fade before it is tried and believed again.
    loop.run_until(120.0, service)
    later = loop.run_until(180.0, service)
    assert later[2] / later.total() == pytest.approx(1 / 3, abs=0.08)


def test_cost_is_latency_times_requests_it_would_have_in_flight() -> None:
    fast, slow = endpoints(1, 1)
    fast.latency.observe(0.0, 0.010)
    slow.latency.observe(0.0, 0.030)
    balancer = PeakEwma(random.Random(3))
    assert balancer.pick([fast, slow], now=0.0) is fast
    fast.in_flight = 2  # 10 ms x 3 = 30 ms: a tie with 30 ms x 1
    assert Counter(balancer.pick([fast, slow], now=0.0) for _ in range(1000))[fast] == (
        pytest.approx(500, abs=60)
    )
    fast.in_flight = 3  # 40 ms: now the slower, idle endpoint is cheaper
    assert balancer.pick([fast, slow], now=0.0) is slow


def test_an_endpoint_not_heard_from_is_probed_at_once_but_not_flooded() -> None:
    known, new = endpoints(1, 1)
    known.latency.observe(0.0, 0.005)
    balancer = PeakEwma(random.Random(4), penalty_seconds=1.0)
    assert balancer.pick([known, new], now=0.0) is new  # idle and unknown: costs nothing
    new.request_started(0.0)
    # Its first answer is not back: one more request there would cost the penalty.
    assert balancer.cost(new, 0.0) == 1.0
    assert balancer.pick([known, new], now=0.0) is known
    new.request_finished(0.004, 0.004, ok=True)
    assert balancer.cost(new, 0.004) == pytest.approx(0.004)


def test_a_cold_start_spreads_a_burst_by_requests_in_flight() -> None:
    eps = endpoints(1, 1, 1)
    balancer = PeakEwma(random.Random(6))
    for _ in range(30):
        chosen = balancer.pick(eps, now=0.0)
        assert chosen is not None
        chosen.request_started(0.0)
    loads = [e.in_flight for e in eps]
    assert max(loads) - min(loads) <= 2


def test_equally_costly_endpoints_share_by_weight() -> None:
    eps = endpoints(3, 1)
    balancer = PeakEwma(random.Random(5))
    counts = Counter(balancer.pick(eps, now=0.0) is eps[0] for _ in range(10_000))
    assert counts[True] / 10_000 == pytest.approx(0.75, abs=0.02)


def test_one_or_no_endpoint_needs_no_choice() -> None:
    balancer = PeakEwma(random.Random(1))
    assert balancer.pick([], now=0.0) is None
    only = endpoints(1)
    assert balancer.pick(only, now=0.0) is only[0]
