"""The upstream side of the proxy: endpoints, load balancers, the policies that
protect a cluster (outlier detection, circuit breaking, retry budgets), and the
connection pools of both protocols (`http1_pool`, `http2_pool`; `http2_channel` is
the HTTP/2 connection shell both directions share).

The policy cores here are sans-IO (time passed in, randomness injected); the asyncio
shells call them on every request, so each call is O(1) or O(log n).
"""

from mycelium.proxy.upstream.balancers import (
    Balancer,
    ConsistentHash,
    LeastRequest,
    PeakEwma,
    RoundRobin,
    build_balancer,
)
from mycelium.proxy.upstream.circuit import CircuitAccountingError, CircuitBreaker, CircuitStats
from mycelium.proxy.upstream.endpoint import EndpointState, PeakEwmaLatency, endpoint_key
from mycelium.proxy.upstream.outlier import EndpointOutlierStatus, OutlierDetector
from mycelium.proxy.upstream.retry_budget import RetryBudget

__all__ = [
    "Balancer",
    "CircuitAccountingError",
    "CircuitBreaker",
    "CircuitStats",
    "ConsistentHash",
    "EndpointOutlierStatus",
    "EndpointState",
    "LeastRequest",
    "OutlierDetector",
    "PeakEwma",
    "PeakEwmaLatency",
    "RetryBudget",
    "RoundRobin",
    "build_balancer",
    "endpoint_key",
]
