"""The one retry loop both protocols forward through, driven by a scripted leg.

The leg is a stand-in for HTTP/1.1 or HTTP/2 (what each protocol supplies: send an
attempt, let an unwanted answer go, stream the chosen one); the cluster, its retry
budget and the policy are the real ones. Over real sockets the same loop is exercised
by tests/integration/proxy (retries over HTTP/1.1 and HTTP/2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import (
    ProxyError,
    RetryBudgetExhausted,
    UpstreamConnectFailed,
    UpstreamReset,
    UpstreamTimeout,
)
from mycelium.proxy.router.forward import forward
from mycelium.proxy.upstream.clusters import ClusterRuntime


@dataclass
class Answer:
    status: int


@dataclass
class ScriptedLeg:
    """Answers each attempt with the next of `script`: a status, or an error to raise."""

    script: list[int | ProxyError]
    method: bytes = b"GET"
    body_held: bool = True
    attempts: list[tuple[int, str]] = field(default_factory=list)
    discarded: list[int] = field(default_factory=list)
    responded: list[int] = field(default_factory=list)

    def replayable(self, error: ProxyError | None) -> bool:
        return self.body_held or isinstance(error, UpstreamConnectFailed)

    async def attempt(
        self, cluster: ClusterRuntime, number: int, timeout: float, *, stated: str
    ) -> Answer:
        self.attempts.append((number, stated))
        outcome = self.script[number]
        if isinstance(outcome, ProxyError):
            raise outcome
        return Answer(outcome)

    def discard(self, cluster: ClusterRuntime, answer: Answer) -> None:
        self.discarded.append(answer.status)

    async def respond(self, cluster: ClusterRuntime, answer: Answer) -> None:
        self.responded.append(answer.status)


def cluster(min_retries_per_second: int = 10) -> ClusterRuntime:
    budget = cfg.RetryBudget(ratio=0.0, min_retries_per_second=min_retries_per_second)
    settings = cfg.Cluster(name="reviews.default", service="reviews.default", retry_budget=budget)
    return ClusterRuntime(settings, 9080, random.Random(1))


def policy(attempts: int, *on: str, per_try: float | None = None) -> cfg.RetryPolicy:
    return cfg.RetryPolicy(attempts=attempts, retry_on=list(on), per_try_timeout=per_try)


async def test_a_retried_status_is_let_go_and_the_next_answer_goes_to_the_client() -> None:
    leg = ScriptedLeg([503, 503, 200])
    await forward(leg, cluster(), policy(2, "5xx"), 5.0, random.Random(1))
    assert [number for number, _ in leg.attempts] == [0, 1, 2]
    assert leg.discarded == [503, 503]
    assert leg.responded == [200]


async def test_the_last_attempts_answer_goes_to_the_client_whatever_its_status() -> None:
    leg = ScriptedLeg([503, 503])
    await forward(leg, cluster(), policy(1, "5xx"), 5.0, random.Random(1))
    assert leg.discarded == [503]
    assert leg.responded == [503]


async def test_a_post_is_not_retried_after_a_reset_but_is_after_a_connect_failure() -> None:
    reset = ScriptedLeg([UpstreamReset("peer reset the stream"), 200], method=b"POST")
    with pytest.raises(UpstreamReset):
        await forward(reset, cluster(), policy(2, "5xx", "reset"), 5.0, random.Random(1))
    assert len(reset.attempts) == 1

    refused = ScriptedLeg([UpstreamConnectFailed("connection refused"), 200], method=b"POST")
    await forward(refused, cluster(), policy(2, "connect-failure"), 5.0, random.Random(1))
    assert refused.responded == [200]


async def test_a_body_no_longer_held_stops_the_retries() -> None:
    leg = ScriptedLeg([503, 200], method=b"PUT", body_held=False)
    await forward(leg, cluster(), policy(2, "5xx"), 5.0, random.Random(1))
    assert leg.responded == [503]


async def test_failures_after_the_last_attempt_raise_the_last_one() -> None:
    leg = ScriptedLeg([UpstreamReset("first"), UpstreamTimeout("second")])
    with pytest.raises(UpstreamTimeout, match="second"):
        await forward(leg, cluster(), policy(1, "5xx"), 5.0, random.Random(1))


async def test_an_empty_retry_budget_refuses_the_retry_and_names_the_last_failure() -> None:
    leg = ScriptedLeg([UpstreamReset("peer reset"), 200])
    with pytest.raises(RetryBudgetExhausted, match=r"over budget; last failure: .*peer reset"):
        await forward(leg, cluster(min_retries_per_second=0), policy(2, "reset"), 5.0, rng())
    assert len(leg.attempts) == 1


async def test_a_timeout_names_the_per_try_or_the_route_budget_it_ran_into() -> None:
    leg = ScriptedLeg([UpstreamTimeout("slow"), 200])
    await forward(leg, cluster(), policy(1, "5xx", per_try=0.2), 5.0, random.Random(1))
    first, second = (stated for _, stated in leg.attempts)
    assert first == "200ms (the per-try timeout)"
    assert second == "200ms (the per-try timeout)"

    whole = ScriptedLeg([200])
    await forward(whole, cluster(), None, 1.5, random.Random(1))
    assert whole.attempts == [(0, "1.5s (the route's timeout)")]


async def test_no_retry_starts_when_its_pause_would_pass_the_route_deadline() -> None:
    leg = ScriptedLeg([UpstreamReset("peer reset"), 200])
    with pytest.raises(UpstreamReset):
        # 1 ms for everything: the first retry's pause (12-25 ms) cannot fit
        await forward(leg, cluster(), policy(3, "reset"), 0.001, random.Random(1))
    assert len(leg.attempts) == 1


def rng() -> random.Random:
    return random.Random(1)
