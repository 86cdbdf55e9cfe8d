"""What a proxy's snapshot contains: the typed bodies of its config entries.

The controller's compiler produces these; a proxy validates every pushed entry against
them before using it (and NACKs with the validation message if one does not fit). Entry
names say what they hold and for whom:

- `inbound`                      the proxy's own workload: ports, identity, mTLS, authz
- `route/<svc>.<ns>`             how to reach a service: hosts, VIP, ports, HTTP/TCP rules
- `cluster/<svc>.<ns>[/<subset>]` a group of endpoints and how to balance and protect it
- `endpoints/<svc>.<ns>[/<subset>]` the addresses of that group's workloads
- `unresolved/<name>`            a subscription that names no known service (yet)
- `gateway`                      a gateway proxy's listeners and what is attached to them

Only what the proxy needs is there: its inbound side and the services it subscribed to
(plus the clusters their routes send to), never the whole mesh.
"""

from __future__ import annotations

from typing import Literal

import msgspec

type Protocol = Literal["HTTP", "HTTP2", "GRPC", "TCP", "TLS"]
type MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
type BalancerKind = Literal["ROUND_ROBIN", "LEAST_REQUEST", "P2C_EWMA", "CONSISTENT_HASH"]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every entry body: immutable, and strict about unknown fields."""


# --- inbound ----------------------------------------------------------------------------


class InboundPort(_Body, frozen=True, kw_only=True):
    port: int  # the service port callers use
    target_port: int  # where the app listens
    service: str  # "<svc>.<ns>"
    protocol: Protocol
    opaque: bool = False
    mtls: MtlsMode = "PERMISSIVE"


class SourceMatch(_Body, frozen=True, kw_only=True):
    principals: list[str] = []
    not_principals: list[str] = []
    namespaces: list[str] = []
    not_namespaces: list[str] = []
    ip_blocks: list[str] = []
    not_ip_blocks: list[str] = []


class OperationMatch(_Body, frozen=True, kw_only=True):
    methods: list[str] = []
    not_methods: list[str] = []
    paths: list[str] = []
    not_paths: list[str] = []
    ports: list[int] = []
    not_ports: list[int] = []


class ConditionMatch(_Body, frozen=True, kw_only=True):
    key: str
    values: list[str] = []
    not_values: list[str] = []


class AuthzRule(_Body, frozen=True, kw_only=True):
    sources: list[SourceMatch] = []
    operations: list[OperationMatch] = []
    conditions: list[ConditionMatch] = []


class AuthzPolicy(_Body, frozen=True, kw_only=True):
    name: str  # "<ns>/<name>" of the AuthorizationPolicy, for logs and metrics
    action: Literal["ALLOW", "DENY", "AUDIT"]
    rules: list[AuthzRule]


class RateLimit(_Body, frozen=True, kw_only=True):
    """One token bucket on the serving side. It counts the requests to `ports` that
    match any of `matches` (no matches: every request)."""

    name: str  # "<ns>/<policy>" (plus "#<rule>" for a per-rule bucket)
    scope: Literal["route", "workload"]
    target: str  # the Service or HTTPRoute it applies to, "<kind>/<ns>/<name>"
    requests: int
    per_seconds: float
    burst: int
    ports: list[int] = []
    matches: list[RouteMatch] = []


class InboundConfig(_Body, frozen=True, kw_only=True):
    workload: str  # "<ns>/<name>"
    namespace: str
    identity: str  # the SPIFFE ID this proxy serves as
    ports: list[InboundPort]
    authorization: list[AuthzPolicy] = []
    rate_limits: list[RateLimit] = []
    # The namespace's egress policy: REGISTRY_ONLY refuses what no Service names.
    egress_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"


# --- routes -----------------------------------------------------------------------------


class StringMatch(_Body, frozen=True, kw_only=True):
    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str


class KeyValueMatch(_Body, frozen=True, kw_only=True):
    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


class RouteMatch(_Body, frozen=True, kw_only=True):
    path: StringMatch | None = None
    headers: list[KeyValueMatch] = []
    query_params: list[KeyValueMatch] = []
    method: str | None = None


class WeightedCluster(_Body, frozen=True, kw_only=True):
    cluster: str  # entry name suffix: "<svc>.<ns>[/<subset>]"
    port: int | None = None  # service port on that cluster (None: the caller's port)
    weight: int


class HeaderEdits(_Body, frozen=True, kw_only=True):
    set: dict[str, str] = {}
    add: dict[str, str] = {}
    remove: list[str] = []


class RetryPolicy(_Body, frozen=True, kw_only=True):
    attempts: int
    per_try_timeout: float | None = None
    retry_on: list[str] = []
    retriable_status_codes: list[int] = []


class FaultPolicy(_Body, frozen=True, kw_only=True):
    delay_seconds: float | None = None
    delay_percentage: float = 0.0
    abort_status: int | None = None
    abort_percentage: float = 0.0


class MirrorPolicy(_Body, frozen=True, kw_only=True):
    cluster: str
    port: int | None = None
    percentage: float = 100.0


class Rewrite(_Body, frozen=True, kw_only=True):
    replace_prefix_match: str | None = None
    replace_full_path: str | None = None
    hostname: str | None = None


class HttpRule(_Body, frozen=True, kw_only=True):
    name: str  # "<route ns>/<route name>#<index>" so logs can point at the rule
    matches: list[RouteMatch] = []  # empty: matches everything
    backends: list[WeightedCluster]
    timeout: float | None = None
    retries: RetryPolicy | None = None
    fault: FaultPolicy | None = None
    mirror: MirrorPolicy | None = None
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    rewrite: Rewrite | None = None


class ServicePort(_Body, frozen=True, kw_only=True):
    name: str
    port: int
    protocol: Protocol
    opaque: bool = False


class ServiceRoute(_Body, frozen=True, kw_only=True):
    service: str  # "<svc>.<ns>"
    hosts: list[str]  # every name that reaches this service
    vip: str | None = None
    ports: list[ServicePort]
    http_rules: list[HttpRule]  # in match order; the last is the default to the service
    tcp_backends: list[WeightedCluster]


# --- clusters and endpoints --------------------------------------------------------------


class ConsistentHash(_Body, frozen=True, kw_only=True):
    header: str | None = None
    cookie: str | None = None
    source_ip: bool = False


class ConnectionPool(_Body, frozen=True, kw_only=True):
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests_in_flight: int | None = None
    connect_timeout: float = 5.0
    idle_timeout: float = 60.0


class OutlierDetection(_Body, frozen=True, kw_only=True):
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: float = 10.0


class RetryBudget(_Body, frozen=True, kw_only=True):
    ratio: float = 0.2
    min_retries_per_second: int = 10
    ttl: float = 10.0


class Cluster(_Body, frozen=True, kw_only=True):
    name: str  # "<svc>.<ns>[/<subset>]"
    service: str
    subset: str | None = None
    balancer: BalancerKind = "P2C_EWMA"
    consistent_hash: ConsistentHash | None = None
    connection_pool: ConnectionPool = msgspec.field(default_factory=ConnectionPool)
    outlier_detection: OutlierDetection | None = None
    retry_budget: RetryBudget = msgspec.field(default_factory=RetryBudget)
    mtls: bool = True  # originate mTLS to these endpoints (they run a proxy)
    # The service ports whose protocol is HTTP2 or GRPC: reached over HTTP/2 whatever
    # the caller spoke. Any other HTTP port is reached over HTTP/1.1, as Istio does.
    http2_ports: list[int] = []


class Endpoint(_Body, frozen=True, kw_only=True):
    workload: str  # "<ns>/<name>"
    address: str
    ports: dict[str, int]  # service port (as a string key, JSON) -> target port
    labels: dict[str, str] = {}
    identity: str  # the SPIFFE ID the peer must present
    weight: int = 1
    healthy: bool = True
    mtls: bool = False  # it runs a proxy, which terminates mTLS (registered by one)
    # Service ports whose PeerAuthentication is DISABLE there: callers speak plaintext,
    # as Istio's automatic mTLS does, rather than TLS the serving proxy would not end.
    plaintext_ports: list[int] = []


class EndpointSet(_Body, frozen=True, kw_only=True):
    cluster: str
    endpoints: list[Endpoint]


class Unresolved(_Body, frozen=True, kw_only=True):
    subscription: str
    reason: str


# --- gateways ------------------------------------------------------------------------------


class GatewayTls(_Body, frozen=True, kw_only=True):
    mode: Literal["Terminate", "Passthrough"]
    certificate_file: str | None = None  # read by the gateway proxy, on its own machine
    key_file: str | None = None


class VirtualHost(_Body, frozen=True, kw_only=True):
    """The HTTP rules for requests whose Host is `hostname`: a name, `*.suffix` (any
    name under suffix) or `*` (any name). The most specific virtual host wins."""

    hostname: str
    rules: list[HttpRule]  # from every route attached with this hostname, in route order


class GatewayListener(_Body, frozen=True, kw_only=True):
    name: str  # "<ns>/<gateway>/<listener>"
    port: int
    protocol: Literal["HTTP", "HTTPS", "TCP", "TLS"]
    hostname: str | None = None  # Host (HTTP) or SNI (TLS) it serves; any when None
    tls: GatewayTls | None = None
    virtual_hosts: list[VirtualHost] = []  # HTTP and HTTPS
    tcp_backends: list[WeightedCluster] = []  # TCP and TLS: where connections are relayed


class GatewayConfig(_Body, frozen=True, kw_only=True):
    listeners: list[GatewayListener]  # sorted by port, then name
    # Routes (and listeners) that name this proxy's Gateways but could not attach, and
    # why: what an operator reads when traffic does not arrive.
    problems: list[str] = []


_BODY_BY_PREFIX: dict[str, type[_Body]] = {
    "inbound": InboundConfig,
    "route": ServiceRoute,
    "cluster": Cluster,
    "endpoints": EndpointSet,
    "unresolved": Unresolved,
    "gateway": GatewayConfig,
}


class InvalidEntry(ValueError):
    """A pushed entry does not fit its type; the message becomes the NACK reason."""


def parse_entry(name: str, body: dict[str, object]) -> _Body:
    """Validate one pushed entry by its name, or raise InvalidEntry saying what is wrong."""
    prefix = name.split("/", 1)[0]
    model = _BODY_BY_PREFIX.get(prefix)
    if model is None:
        raise InvalidEntry(f"unknown config entry type {prefix!r} (entry {name!r})")
    try:
        return msgspec.convert(body, type=model)
    except msgspec.ValidationError as exc:
        raise InvalidEntry(f"entry {name!r}: {exc}") from None


def to_body(body: _Body) -> dict[str, object]:
    """The JSON-ready form of a body, as the controller ships it."""
    data: dict[str, object] = msgspec.to_builtins(body)
    return data
