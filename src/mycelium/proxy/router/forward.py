"""Attempts, timeouts and retries: the one loop both protocols forward through.

`forward` makes the first attempt and repeats it while the rule's retry policy, the
cluster's retry budget and the route's deadline allow: after a connect failure, a
reset, a per-try timeout, or a response whose status the policy retries. Between
attempts it waits `retry_pause`. The protocol supplies the `UpstreamLeg`: how one
attempt is sent and its response head awaited, how an unwanted response is let go,
and how the chosen one is streamed to the client.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from mycelium.proxy.destination import duration_text
from mycelium.proxy.errors import (
    ProxyError,
    RetryBudgetExhausted,
    UpstreamConnectFailed,
    UpstreamReset,
    UpstreamTimeout,
)
from mycelium.proxy.router.retries import retry_allowed, retry_pause, status_error
from mycelium.proxy.routing import DEFAULT_TIMEOUT_SECONDS

if TYPE_CHECKING:
    import random

    from mycelium.discovery import config as cfg
    from mycelium.proxy.routing import CompiledRule
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState

# What an attempt may fail with and still be retried (policy permitting).
RETRIABLE = (UpstreamConnectFailed, UpstreamReset, UpstreamTimeout)


class Answer(Protocol):
    """An attempt's response head, as far as the retry loop cares."""

    @property
    def status(self) -> int: ...


class HeadAnswer:
    """An attempt's response head as a status and fields, and the endpoint it came
    from (what an HTTP/2 stream gets back, in either leg that opens one)."""

    __slots__ = ("endpoint", "headers", "status")

    def __init__(
        self, endpoint: EndpointState, status: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.endpoint = endpoint
        self.status = status
        self.headers = headers


class UpstreamLeg[A: Answer](Protocol):
    """How one protocol sends attempts upstream and answers downstream."""

    method: bytes

    def replayable(self, error: ProxyError | None) -> bool:
        """Whether the request can be sent again after this failure (its body held)."""
        ...

    async def attempt(
        self, cluster: ClusterRuntime, number: int, timeout: float, *, stated: str
    ) -> A:
        """Send attempt `number` and await its response head within `timeout`; a timeout
        raises `UpstreamTimeout` naming `stated`."""
        ...

    def discard(self, cluster: ClusterRuntime, answer: A) -> None:
        """A response the policy retries: let it go (and account its attempt)."""
        ...

    async def respond(self, cluster: ClusterRuntime, answer: A) -> None:
        """Stream the chosen response to the client, to its end."""
        ...


def route_timeout(rule: CompiledRule | None) -> float:
    """The route's whole budget for the response head, retries included."""
    return (rule.rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS


async def forward[A: Answer](
    leg: UpstreamLeg[A],
    cluster: ClusterRuntime,
    policy: cfg.RetryPolicy | None,
    timeout: float,
    rng: random.Random,
    *,
    first: int = 0,
    last_error: ProxyError | None = None,
    deadline: float | None = None,
) -> None:
    """Attempt, and retry as `policy` allows, from attempt number `first` (more than 0
    when a synchronous first attempt failed with `last_error`); `deadline` is the
    route's, in loop time, if already running."""
    loop = asyncio.get_running_loop()
    if deadline is None:
        deadline = loop.time() + timeout
    attempts = 1 + (policy.attempts if policy is not None else 0)
    budget = cluster.retry_budget
    if first == 0:
        budget.record_request(time.monotonic())
    for attempt in range(first, attempts):
        if attempt > 0:
            if not budget.try_retry(time.monotonic()):
                assert last_error is not None
                raise RetryBudgetExhausted(
                    f"retries to {cluster.name} are over budget; last failure: "
                    f"{last_error.reason}: {last_error.detail}"
                )
            pause = retry_pause(attempt, rng)
            if loop.time() + pause >= deadline:
                break
            await asyncio.sleep(pause)
        per_try = policy.per_try_timeout if policy is not None else None
        remaining = deadline - loop.time()
        try_timeout = min(per_try, remaining) if per_try else remaining
        if try_timeout == remaining:
            stated = f"{duration_text(timeout)} (the route's timeout)"
        else:
            stated = f"{duration_text(try_timeout)} (the per-try timeout)"
        try:
            answer = await leg.attempt(cluster, attempt, try_timeout, stated=stated)
        except RETRIABLE as exc:
            last_error = exc
            if attempt + 1 < attempts and retry_allowed(
                policy, leg.method, leg.replayable(exc), error=exc
            ):
                continue
            raise
        status = answer.status
        if attempt + 1 < attempts and retry_allowed(
            policy, leg.method, leg.replayable(None), status=status
        ):
            last_error = status_error(status)
            leg.discard(cluster, answer)
            continue
        await leg.respond(cluster, answer)
        return
    assert last_error is not None
    if isinstance(last_error, RETRIABLE):
        raise last_error
    raise UpstreamTimeout(f"no response from {cluster.name} within {duration_text(timeout)}")
