"""DestinationPolicy and RateLimitPolicy: how traffic to a Service is balanced and bounded.

A DestinationPolicy names its Service by `host`: "reviews" means the Service of that name
in the policy's own namespace, "reviews.other" the one in namespace "other". Invariants:
consistent-hash settings are given if and only if the balancer is CONSISTENT_HASH, and
then exactly one hash key; outlier detection has at least one ejection trigger; subset
names are unique.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from mycelium.api.meta import ApiModel, Resource, repeated
from mycelium.api.scalars import (
    DNS_LABEL_PATTERN,
    DnsLabel,
    Duration,
    HeaderName,
    Labels,
    Percentage,
    check_dns_label,
)

type BalancerType = Literal["ROUND_ROBIN", "LEAST_REQUEST", "P2C_EWMA", "CONSISTENT_HASH"]
type PositiveInt = Annotated[int, Field(ge=1)]

_LABEL = DNS_LABEL_PATTERN.strip("^$")
HOST_PATTERN = f"^{_LABEL}(\\.{_LABEL})?$"


class ConsistentHash(ApiModel):
    """What to hash on; exactly one of the three."""

    header: HeaderName | None = None
    cookie: Annotated[str, Field(min_length=1)] | None = None
    source_ip: bool | None = Field(default=None, alias="sourceIP")

    @model_validator(mode="after")
    def _exactly_one_key(self) -> Self:
        keys = [self.header is not None, self.cookie is not None, bool(self.source_ip)]
        if sum(keys) != 1:
            raise ValueError("set exactly one hash key: header, cookie, or sourceIP: true")
        return self


class LoadBalancer(ApiModel):
    type: BalancerType = "P2C_EWMA"
    """P2C_EWMA (power of two choices over latency, Linkerd's default) suits most services."""
    consistent_hash: ConsistentHash | None = None
    """Required with type CONSISTENT_HASH, and only then."""

    @model_validator(mode="after")
    def _hash_iff_consistent(self) -> Self:
        if self.type == "CONSISTENT_HASH" and self.consistent_hash is None:
            raise ValueError("type CONSISTENT_HASH needs consistentHash: say what to hash on")
        if self.type != "CONSISTENT_HASH" and self.consistent_hash is not None:
            raise ValueError(
                f"consistentHash only applies to type CONSISTENT_HASH, not {self.type}: "
                "change the type or remove consistentHash"
            )
        return self


class ConnectionPool(ApiModel):
    max_connections: PositiveInt | None = None
    max_pending_requests: PositiveInt | None = None
    max_requests_in_flight: PositiveInt | None = None
    connect_timeout: Duration | None = None
    idle_timeout: Duration | None = None


class OutlierDetection(ApiModel):
    """Ejects an endpoint after consecutive failures, for a growing time (circuit breaking)."""

    consecutive_5xx_errors: PositiveInt | None = None
    consecutive_gateway_errors: PositiveInt | None = None
    """502, 503 and 504 only."""
    interval: Duration = Field(default="10s", validate_default=True)
    """How often ejections are reconsidered."""
    base_ejection_time: Duration = Field(default="30s", validate_default=True)
    """How long a first ejection lasts; each repeat ejection lasts longer."""
    max_ejection_percent: Percentage = 10

    @model_validator(mode="after")
    def _has_a_trigger(self) -> Self:
        if self.consecutive_5xx_errors is None and self.consecutive_gateway_errors is None:
            raise ValueError(
                "outlier detection needs a trigger: set consecutive5xxErrors or "
                "consecutiveGatewayErrors"
            )
        return self


class RetryBudget(ApiModel):
    """Retries allowed as a share of recent requests (Linkerd's budgets)."""

    ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Extra load retries may add: 0.2 allows one retry for every five requests."""
    min_retries_per_second: Annotated[int, Field(ge=0)] = 10
    """Retries always allowed, so that low-traffic services can still retry."""
    ttl: Duration = Field(default="10s", validate_default=True)
    """The window over which requests and retries are counted."""


class Subset(ApiModel):
    """A named group of the Service's workloads, chosen by extra labels (e.g. version: v2)."""

    name: DnsLabel
    labels: Labels

    @field_validator("labels")
    @classmethod
    def _not_empty(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels:
            raise ValueError("a subset needs at least one label to choose its workloads")
        return labels


def _check_host(value: str) -> str:
    parts = value.split(".")
    try:
        if len(parts) > 2:
            raise ValueError("too many dots")
        for part in parts:
            check_dns_label(part)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a Service host: write the Service name ('reviews') or "
            "name.namespace ('reviews.bookinfo')"
        ) from None
    return value


class DestinationPolicySpec(ApiModel):
    host: Annotated[str, Field(json_schema_extra={"pattern": HOST_PATTERN})]
    """The Service: "name" (this namespace) or "name.namespace"."""
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    retry_budget: RetryBudget | None = None
    subsets: list[Subset] = []

    @field_validator("host")
    @classmethod
    def _host_names_a_service(cls, host: str) -> str:
        return _check_host(host)

    @field_validator("subsets")
    @classmethod
    def _subset_names_unique(cls, subsets: list[Subset]) -> list[Subset]:
        if names := repeated(subset.name for subset in subsets):
            raise ValueError(f"subset names must be unique; repeated: {', '.join(names)}")
        return subsets


class DestinationPolicy(Resource):
    """Load balancing, connection limits, outlier detection, retry budget and subsets."""

    kind: Literal["DestinationPolicy"] = "DestinationPolicy"
    spec: DestinationPolicySpec

    def service(self) -> tuple[str, str]:
        """(namespace, name) of the Service that `spec.host` names."""
        name, _, namespace = self.spec.host.partition(".")
        return (namespace or self.metadata.namespace, name)


class RateLimitTargetRef(ApiModel):
    """A Service or HTTPRoute in the policy's namespace."""

    kind: Literal["Service", "HTTPRoute"]
    name: DnsLabel


class RateLimit(ApiModel):
    """A token bucket: `requests` tokens every `per`, holding at most `burst` tokens.

    `burst` defaults to `requests`.
    """

    requests: PositiveInt
    per: Duration
    burst: PositiveInt | None = None


class RateLimitPolicySpec(ApiModel):
    target_ref: RateLimitTargetRef
    scope: Literal["route", "workload"] = "workload"
    """"workload": each serving proxy counts on its own; "route": per route of the target."""
    limit: RateLimit


class RateLimitPolicy(Resource):
    """A local rate limit on the requests a Service (or one HTTPRoute) accepts."""

    kind: Literal["RateLimitPolicy"] = "RateLimitPolicy"
    spec: RateLimitPolicySpec
