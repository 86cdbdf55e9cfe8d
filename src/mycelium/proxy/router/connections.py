"""An attempt's connection to its endpoint, from the pool of the protocol the cluster's
port speaks, within the attempt's time; a failure to connect is reported to the
cluster (its breaker slot freed, outlier detection told)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mycelium.proxy.destination import duration_text
from mycelium.proxy.errors import UpstreamConnectFailed
from mycelium.proxy.router.attempts import connect_failed

if TYPE_CHECKING:
    from mycelium.proxy.router.engine import Engine
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState
    from mycelium.proxy.upstream.http1_pool import UpstreamHttp1
    from mycelium.proxy.upstream.http2_pool import UpstreamHttp2


async def upstream_connection(
    engine: Engine, cluster: ClusterRuntime, endpoint: EndpointState, timeout: float
) -> UpstreamHttp2 | UpstreamHttp1:
    """A connection for one attempt: an HTTP/2 one (a stream's worth of it, mTLS when
    the endpoint runs a proxy) when the cluster's port speaks HTTP/2, else a pooled
    HTTP/1.1 one; raises `UpstreamConnectFailed` within `timeout`."""
    connect_timeout = cluster.settings.connection_pool.connect_timeout
    try:
        async with asyncio.timeout(timeout):
            if not cluster.http2:
                return await engine.pool_for(cluster, endpoint).acquire(connect_timeout)
            mtls = engine.speaks_mtls(cluster, endpoint)
            return await engine.h2_pools.acquire(
                endpoint.address,
                endpoint.port,
                connect_timeout,
                tls=engine.client_tls() if mtls else None,
                identity=endpoint.identity if mtls else "",
            )
    except (UpstreamConnectFailed, TimeoutError) as exc:
        connect_failed(cluster, endpoint)
        if isinstance(exc, UpstreamConnectFailed):
            raise
        raise UpstreamConnectFailed(
            f"no connection to {endpoint.key} within {duration_text(timeout)}"
        ) from None
