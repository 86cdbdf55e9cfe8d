"""Why the proxy answered a request itself: one error class per reason.

Every response the proxy generates carries its reason in `x-mycelium-reason` and in the
access log, so that "503" is never the whole story: `no_route` (nothing matches),
`upstream_connect_failed`, `upstream_timeout`, `upstream_reset`, `circuit_open`,
`no_healthy_upstream`, `rate_limited`, `retry_budget_exhausted`, `fault_injected`,
`egress_denied`...
The reason strings are part of the product's interface: dashboards and alerts key on
them, so they only ever gain members.
"""

from __future__ import annotations

from mycelium.errors import MeshError

REASON_HEADER = b"x-mycelium-reason"


class ClientGone(Exception):
    """The client reset its stream or closed its connection before the response was
    over: nobody is left to answer, so the request ends quietly with reason
    `client_reset` (Envoy's DC flag) and whatever status had been sent."""


class ProxyError(MeshError):
    """A request the proxy answers itself, with `status` and a machine-readable `reason`."""

    status = 503
    reason = "proxy_error"

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class NoRoute(ProxyError):
    status = 404
    reason = "no_route"


class UnknownService(ProxyError):
    status = 503
    reason = "unknown_service"


class EgressDenied(ProxyError):
    """The destination is no Service in the registry, and the namespace's egress policy
    is REGISTRY_ONLY. 502, as Istio's BlackHoleCluster answers."""

    status = 502
    reason = "egress_denied"


class NoHealthyUpstream(ProxyError):
    status = 503
    reason = "no_healthy_upstream"


class UpstreamConnectFailed(ProxyError):
    status = 503
    reason = "upstream_connect_failed"


class UpstreamTimeout(ProxyError):
    status = 504
    reason = "upstream_timeout"


class UpstreamReset(ProxyError):
    status = 502
    reason = "upstream_reset"


class UpstreamUnprocessed(UpstreamReset):
    """The upstream said it never processed the request (an HTTP/2 GOAWAY above its last
    stream id, or REFUSED_STREAM): repeating it is safe whatever the method."""


class UpstreamProtocolViolation(ProxyError):
    status = 502
    reason = "upstream_protocol_error"


class CircuitOpen(ProxyError):
    status = 503
    reason = "circuit_open"


class Denied(ProxyError):
    """An AuthorizationPolicy refused the request."""

    status = 403
    reason = "denied"


class RateLimited(ProxyError):
    status = 429
    reason = "rate_limited"


class RetryBudgetExhausted(ProxyError):
    status = 503
    reason = "retry_budget_exhausted"


class FaultInjected(ProxyError):
    reason = "fault_injected"

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Draining(ProxyError):
    status = 503
    reason = "draining"


class RequestTimeout(ProxyError):
    status = 408
    reason = "request_timeout"
