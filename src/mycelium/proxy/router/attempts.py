"""One attempt's bookkeeping: the endpoint it goes to, the breaker's slot it holds,
and what its end tells the balancer and outlier detection.

Every attempt that acquired a slot ends in exactly one of `attempt_over` (a response
came), `attempt_failed` (timeout or reset: the endpoint's fault) or `attempt_abandoned`
(the client left: nobody's fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

from mycelium.proxy.errors import (
    CircuitOpen,
    ClientGone,
    NoHealthyUpstream,
    ProxyError,
    UpstreamTimeout,
)
from mycelium.proxy.upstream.hash_key import request_hash_key

if TYPE_CHECKING:
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState

type AttemptFailure = Literal["timeout", "reset"]


def no_healthy_endpoint(cluster: ClusterRuntime) -> NoHealthyUpstream:
    return NoHealthyUpstream(
        f"cluster {cluster.name} has no healthy endpoint "
        f"({len(cluster.endpoints)} known, the rest ejected or unhealthy)"
    )


def circuit_open(cluster: ClusterRuntime) -> CircuitOpen:
    return CircuitOpen(f"cluster {cluster.name} is at its limit of requests in flight")


def pick_endpoint(cluster: ClusterRuntime, now: float, hash_key: bytes | None) -> EndpointState:
    """The endpoint the balancer picks, its breaker slot taken; raises when none may be
    had (503 `no_healthy_upstream`, `circuit_open`)."""
    endpoint = cluster.pick(now, hash_key)
    if endpoint is None:
        raise no_healthy_endpoint(cluster)
    if not cluster.breaker.try_acquire_request():
        raise circuit_open(cluster)
    return endpoint


def endpoint_for(
    cluster: ClusterRuntime, now: float, headers: list[tuple[bytes, bytes]], peer_host: str
) -> EndpointState:
    """`pick_endpoint` for a request, hashed on what the cluster's consistent hash names."""
    return pick_endpoint(
        cluster, now, request_hash_key(cluster.settings.consistent_hash, headers, peer_host)
    )


def connect_failed(cluster: ClusterRuntime, endpoint: EndpointState) -> None:
    """No connection to the endpoint: the slot goes back, outlier detection hears."""
    cluster.breaker.release_request()
    cluster.outlier.record(endpoint, status=None, failure="connect", now=time.monotonic())


def attempt_over(
    cluster: ClusterRuntime, endpoint: EndpointState, started: float, status: int, *, ok: bool
) -> None:
    """The attempt got its response (`ok`: the endpoint did its job)."""
    cluster.breaker.release_request()
    now = time.monotonic()
    endpoint.request_finished(now, now - started, ok=ok)
    cluster.outlier.record(endpoint, status=status, failure=None, now=now)


def attempt_failed(
    cluster: ClusterRuntime, endpoint: EndpointState, started: float, failure: AttemptFailure
) -> None:
    """The endpoint did not answer in time, or reset the attempt."""
    cluster.breaker.release_request()
    now = time.monotonic()
    endpoint.request_finished(now, now - started, ok=False)
    cluster.outlier.record(endpoint, status=None, failure=failure, now=now)


def attempt_abandoned(cluster: ClusterRuntime, endpoint: EndpointState, started: float) -> None:
    """An attempt nobody waits for any more (the client left): its slot is freed,
    and it counts as no failure of the endpoint's."""
    cluster.breaker.release_request()
    now = time.monotonic()
    endpoint.request_finished(now, now - started, ok=True)


@contextlib.contextmanager
def awaiting_head(
    cluster: ClusterRuntime,
    endpoint: EndpointState,
    started: float,
    stated: str,
    *,
    give_up: Callable[[], None],
    lost: Callable[[], None] = lambda: None,
) -> Iterator[None]:
    """Settle an attempt that sends its request and awaits the response head inside:
    out of time, the attempt is given up (`give_up`: its stream or connection let go)
    and fails as a timeout naming `stated`; a reset or a broken protocol fails it as a
    reset (`lost`: the connection is gone already); the client leaving abandons it,
    which is no failure of the endpoint's."""
    try:
        yield
    except TimeoutError:
        give_up()
        attempt_failed(cluster, endpoint, started, "timeout")
        raise UpstreamTimeout(f"{endpoint.key} did not answer within {stated}") from None
    except ProxyError:
        lost()
        attempt_failed(cluster, endpoint, started, "reset")
        raise
    except (asyncio.CancelledError, ClientGone):
        give_up()
        attempt_abandoned(cluster, endpoint, started)
        raise
