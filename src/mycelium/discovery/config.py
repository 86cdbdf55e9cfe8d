"""What a proxy's snapshot contains: the typed bodies of its config entries.

The controller's compiler produces these; a proxy validates every pushed entry against
them before using it (and NACKs with the validation message if one does not fit). Entry
names say what they hold and for whom:

- `inbound`                      the proxy's own workload: ports, identity, mTLS, authz
- `route/<svc>.<ns>`             how to reach a service: hosts, VIP, ports, HTTP/TCP rules
- `cluster/<svc>.<ns>[/<subset>]` a group of endpoints and how to balance and protect it
- `endpoints/<svc>.<ns>[/<subset>]` the addresses of that group's workloads
- `unresolved/<name>`            a subscription that names no known service (yet)

Only what the proxy needs is there: its inbound side and the services it subscribed to
(plus the clusters their routes send to), never the whole mesh.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

type Protocol = Literal["HTTP", "HTTP2", "GRPC", "TCP", "TLS"]
type MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
type BalancerKind = Literal["ROUND_ROBIN", "LEAST_REQUEST", "P2C_EWMA", "CONSISTENT_HASH"]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- inbound ----------------------------------------------------------------------------


class InboundPort(_Body):
    port: int  # the service port callers use
    target_port: int  # where the app listens
    service: str  # "<svc>.<ns>"
    protocol: Protocol
    opaque: bool = False
    mtls: MtlsMode = "PERMISSIVE"


class SourceMatch(_Body):
    principals: list[str] = Field(default_factory=list)
    not_principals: list[str] = Field(default_factory=list)
    namespaces: list[str] = Field(default_factory=list)
    not_namespaces: list[str] = Field(default_factory=list)
    ip_blocks: list[str] = Field(default_factory=list)
    not_ip_blocks: list[str] = Field(default_factory=list)


class OperationMatch(_Body):
    methods: list[str] = Field(default_factory=list)
    not_methods: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    not_paths: list[str] = Field(default_factory=list)
    ports: list[int] = Field(default_factory=list)
    not_ports: list[int] = Field(default_factory=list)


class ConditionMatch(_Body):
    key: str
    values: list[str] = Field(default_factory=list)
    not_values: list[str] = Field(default_factory=list)


class AuthzRule(_Body):
    sources: list[SourceMatch] = Field(default_factory=list)
    operations: list[OperationMatch] = Field(default_factory=list)
    conditions: list[ConditionMatch] = Field(default_factory=list)


class AuthzPolicy(_Body):
    name: str  # "<ns>/<name>" of the AuthorizationPolicy, for logs and metrics
    action: Literal["ALLOW", "DENY", "AUDIT"]
    rules: list[AuthzRule]


class RateLimit(_Body):
    name: str
    scope: Literal["route", "workload"]
    target: str  # the Service or HTTPRoute it applies to, "<kind>/<ns>/<name>"
    requests: int
    per_seconds: float
    burst: int


class InboundConfig(_Body):
    workload: str  # "<ns>/<name>"
    namespace: str
    identity: str  # the SPIFFE ID this proxy serves as
    ports: list[InboundPort]
    authorization: list[AuthzPolicy] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)


# --- routes -----------------------------------------------------------------------------


class StringMatch(_Body):
    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str


class KeyValueMatch(_Body):
    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


class RouteMatch(_Body):
    path: StringMatch | None = None
    headers: list[KeyValueMatch] = Field(default_factory=list)
    query_params: list[KeyValueMatch] = Field(default_factory=list)
    method: str | None = None


class WeightedCluster(_Body):
    cluster: str  # entry name suffix: "<svc>.<ns>[/<subset>]"
    port: int | None = None  # service port on that cluster (None: the caller's port)
    weight: int


class HeaderEdits(_Body):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class RetryPolicy(_Body):
    attempts: int
    per_try_timeout: float | None = None
    retry_on: list[str] = Field(default_factory=list)
    retriable_status_codes: list[int] = Field(default_factory=list)


class FaultPolicy(_Body):
    delay_seconds: float | None = None
    delay_percentage: float = 0.0
    abort_status: int | None = None
    abort_percentage: float = 0.0


class MirrorPolicy(_Body):
    cluster: str
    port: int | None = None
    percentage: float = 100.0


class Rewrite(_Body):
    replace_prefix_match: str | None = None
    replace_full_path: str | None = None
    hostname: str | None = None


class HttpRule(_Body):
    name: str  # "<route ns>/<route name>#<index>" so logs can point at the rule
    matches: list[RouteMatch] = Field(default_factory=list)  # empty: matches everything
    backends: list[WeightedCluster]
    timeout: float | None = None
    retries: RetryPolicy | None = None
    fault: FaultPolicy | None = None
    mirror: MirrorPolicy | None = None
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    rewrite: Rewrite | None = None


class ServicePort(_Body):
    name: str
    port: int
    protocol: Protocol
    opaque: bool = False


class ServiceRoute(_Body):
    service: str  # "<svc>.<ns>"
    hosts: list[str]  # every name that reaches this service
    vip: str | None = None
    ports: list[ServicePort]
    http_rules: list[HttpRule]  # in match order; the last is the default to the service
    tcp_backends: list[WeightedCluster]


# --- clusters and endpoints --------------------------------------------------------------


class ConsistentHash(_Body):
    header: str | None = None
    cookie: str | None = None
    source_ip: bool = False


class ConnectionPool(_Body):
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests_in_flight: int | None = None
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0


class OutlierDetection(_Body):
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: float = 10.0


class RetryBudget(_Body):
    ratio: float = 0.2
    min_retries_per_second: int = 10
    ttl: float = 10.0


class Cluster(_Body):
    name: str  # "<svc>.<ns>[/<subset>]"
    service: str
    subset: str | None = None
    balancer: BalancerKind = "P2C_EWMA"
    consistent_hash: ConsistentHash | None = None
    connection_pool: ConnectionPool = Field(default_factory=ConnectionPool)
    outlier_detection: OutlierDetection | None = None
    retry_budget: RetryBudget = Field(default_factory=RetryBudget)
    mtls: bool = True  # originate mTLS to these endpoints (they run a proxy)


class Endpoint(_Body):
    workload: str  # "<ns>/<name>"
    address: str
    ports: dict[str, int]  # service port (as a string key, JSON) -> target port
    labels: dict[str, str] = Field(default_factory=dict)
    identity: str  # the SPIFFE ID the peer must present
    weight: int = 1
    healthy: bool = True


class EndpointSet(_Body):
    cluster: str
    endpoints: list[Endpoint]


class Unresolved(_Body):
    subscription: str
    reason: str


_BODY_BY_PREFIX: dict[str, type[_Body]] = {
    "inbound": InboundConfig,
    "route": ServiceRoute,
    "cluster": Cluster,
    "endpoints": EndpointSet,
    "unresolved": Unresolved,
}


def parse_entry(name: str, body: dict[str, object]) -> _Body:
    """Validate one pushed entry by its name; raises pydantic's ValidationError or KeyError."""
    prefix = name.split("/", 1)[0]
    model = _BODY_BY_PREFIX.get(prefix)
    if model is None:
        raise KeyError(f"unknown config entry type {prefix!r} (entry {name!r})")
    return model.model_validate(body)
