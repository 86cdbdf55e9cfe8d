"""Traffic mirroring: a copy of a request goes to another cluster, and is forgotten.

A rule's `mirror` sends that share of its requests, with the body, to the mirror
cluster; the copy's `host` (`:authority` over HTTP/2) gets a `-shadow` suffix, as
Istio's and Envoy's do, so the receiving service can tell it is not real traffic. The
copy never changes the real response: it is sent on its own task, its response is read
and dropped, and its failures are only counted (`mirror_sent`, `mirror_failed`,
`mirror_skipped`). A body too large to hold whole (a streamed one) is not copied.

HTTP/1.1 requests are copied over HTTP/1.1, HTTP/2 requests (gRPC among them) over
HTTP/2, as their real upstreams receive them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mycelium.discovery import config as cfg
    from mycelium.proxy.active_config import ActiveConfig
    from mycelium.proxy.router.engine import Engine
    from mycelium.proxy.upstream.clusters import ClusterRuntime

# How long a copy may take, its body included, before it is abandoned.
MIRROR_TIMEOUT_SECONDS = 5.0
SHADOW_SUFFIX = b"-shadow"


def mirror_cluster(
    engine: Engine, config: ActiveConfig, policy: cfg.MirrorPolicy, port: int
) -> ClusterRuntime | None:
    """The cluster this request's copy goes to, or None when it sends no copy."""
    if policy.percentage < 100 and engine.rng.random() * 100 >= policy.percentage:
        return None
    if policy.cluster not in config.clusters:
        engine.counters["mirror_skipped"] += 1
        return None
    return engine.cluster(config, policy.cluster, policy.port or port)
