"""What the router and the protocol shells use of the proxy's shared state.

The process holds one `ProxyCore`; the layers below it are typed against this view of
it, so that none of them imports the core (which imports them) and each says what it
reaches for.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import defaultdict
from collections.abc import Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mycelium.net.drain import DrainSet
    from mycelium.net.relay import TcpRelay
    from mycelium.proxy.active_config import ActiveConfig
    from mycelium.proxy.protocols.http1 import Http1Limits
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState
    from mycelium.proxy.upstream.http1_pool import EndpointPool, PoolSet
    from mycelium.proxy.upstream.http2_pool import Http2Pools
    from mycelium.telemetry import RequestObserver
    from mycelium.telemetry.tracing import Tracer


class DownstreamConnection(Hashable, Protocol):
    """A client's connection, as the sweep and the drain handle it."""

    def check_timeouts(self, now: float) -> None: ...

    def close_if_idle(self) -> bool: ...

    def abort(self) -> None: ...


class Engine(Protocol):
    """The proxy as a request sees it: the config in force, clusters, counters, tasks."""

    active: ActiveConfig
    rng: random.Random
    log: logging.Logger
    tracer: Tracer | None
    # defaultdict: an increment per request on the hot path
    counters: defaultdict[str, int]
    requests: int  # requests finished (`ProxiedRequest.report` counts them)
    requests_sync: int  # HTTP/1.1 requests sent on the synchronous path
    request_observers: list[RequestObserver]  # told of every request once it ended
    connections: DrainSet[DownstreamConnection]  # open client connections, for the drain

    draining: bool

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...

    async def resolve(self, host: str) -> None:
        """Subscribe to a name heard for the first time and wait for its config."""
        ...

    def cluster(self, config: ActiveConfig, name: str, port: int) -> ClusterRuntime: ...

    @property
    def h2_pools(self) -> Http2Pools:
        """Connections to endpoints whose port speaks HTTP/2."""
        ...

    def pool_for(self, cluster: ClusterRuntime, endpoint: EndpointState) -> EndpointPool:
        """Keep-alive HTTP/1.1 connections to an endpoint whose port speaks it."""
        ...

    def local_app(self, target_port: int, *, http2: bool = False) -> ClusterRuntime: ...

    def speaks_mtls(self, cluster: ClusterRuntime, endpoint: EndpointState) -> bool: ...

    def client_tls(self) -> ssl.SSLContext: ...

    def refused(self, reason: str, peer: str) -> None:
        """Count (and log) a client refused for breaking the protocol's limits."""
        ...


class Http1Engine(Engine, Protocol):
    """What an HTTP/1.1 connection and its exchanges use of the proxy."""

    http1_limits: Http1Limits
    pools: PoolSet  # plaintext connections (mirrored copies go on these)
    relays: DrainSet[TcpRelay]  # byte pipes (upgraded connections), for the drain
