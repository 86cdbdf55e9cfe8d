"""The config a proxy serves with: a snapshot's entries parsed, indexed and compiled.

`build_active_config` is called by the discovery client's acceptance hook for every
pushed snapshot. Anything that does not parse or compile raises, which becomes the
NACK reason while the previous `ActiveConfig` stays in force. An `ActiveConfig` is
immutable once built: a request takes the current one when it starts and keeps it to
the end, so a config change never disturbs a request in flight.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import Entry
from mycelium.proxy.destination import service_port
from mycelium.proxy.filters.authorization import Authorizer
from mycelium.proxy.filters.chain import RuleChain, build_chain
from mycelium.proxy.filters.rate_limit import RateLimitFilter
from mycelium.proxy.gateway import GatewayRoutes, UnknownHost, build_gateway
from mycelium.proxy.routing import CompiledRoute, compile_route
from mycelium.proxy.upstream.clusters import ClusterRuntime

# Distinct names cached per config: more than any mesh has services under all their
# names, few enough that a client inventing Host values cannot grow the cache much.
MAX_RESOLVED_NAMES = 4096


@dataclass(frozen=True, slots=True)
class Destination:
    service: str  # "<svc>.<ns>"
    route: CompiledRoute
    host: str  # the Host value it was found by ("" for a local listener's service)
    port: int  # the service port meant: the Host's port, else the first HTTP one


@dataclass(slots=True)
class ActiveConfig:
    version: str = ""
    inbound: cfg.InboundConfig | None = None
    routes: dict[str, CompiledRoute] = field(default_factory=dict)  # by "<svc>.<ns>"
    hosts: dict[str, str] = field(default_factory=dict)  # host or VIP -> "<svc>.<ns>"
    clusters: dict[str, cfg.Cluster] = field(default_factory=dict)
    endpoints: dict[str, cfg.EndpointSet] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # subscription -> reason
    rate_limits: list[RateLimitFilter] = field(default_factory=list)
    authorizer: Authorizer = field(default_factory=lambda: Authorizer([]))
    inbound_ports: dict[int, cfg.InboundPort] = field(default_factory=dict)
    gateway: GatewayRoutes | None = None  # a gateway proxy's listeners
    # Names requests used (a Host value as received, or a local listener's service),
    # resolved to their service and route; bounded by `MAX_RESOLVED_NAMES`. The one
    # thing that grows after the build: a memo of what the fields above already say.
    resolved: dict[str | bytes, tuple[str, CompiledRoute]] = field(default_factory=dict)
    # The same names with what an HTTP/1.1 request through them means (`destination`),
    # and the live clusters requests reached under this config, by name, then port.
    destinations: dict[str | bytes, Destination] = field(default_factory=dict)
    live_clusters: dict[str, dict[int, ClusterRuntime]] = field(default_factory=dict)
    # A gateway's destinations by (listener port, Host value as received).
    gateway_destinations: dict[tuple[int, bytes | str], Destination] = field(default_factory=dict)

    def resolve(self, name: str | bytes) -> tuple[str, CompiledRoute] | None:
        """The service and route for a Host value (bytes) or a service name, cached."""
        found = self.resolved.get(name)
        if found is not None:
            return found
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        service = self.service_for(text)
        if service is None:
            return None
        route = self.routes.get(service)
        if route is None:
            return None
        if len(self.resolved) < MAX_RESOLVED_NAMES:
            self.resolved[name] = (service, route)
        return service, route

    def destination(self, name: str | bytes) -> Destination | None:
        """Where a request goes by `name`: a Host value as received (bytes), or a local
        listener's service (str), whose own port says nothing of the service's. Cached,
        as `resolve` is."""
        found = self.destinations.get(name)
        if found is not None:
            return found
        resolved = self.resolve(name)
        if resolved is None:
            return None
        service, route = resolved
        if isinstance(name, bytes):
            host = name.decode("latin-1")
            found = Destination(service, route, host, service_port(host, False, route.route))
        else:
            found = Destination(service, route, "", service_port(name, True, route.route))
        if len(self.destinations) < MAX_RESOLVED_NAMES:
            self.destinations[name] = found
        return found

    def gateway_destination(self, port: int, host: bytes | str) -> Destination:
        """Where a request to gateway listener port `port` goes by its Host value;
        raises `UnknownHost` or `NoRoute` (404s) when nothing there serves that host.
        Cached, as `destination` is."""
        key = (port, host)
        found = self.gateway_destinations.get(key)
        if found is not None:
            return found
        if self.gateway is None:
            raise UnknownHost(f"this proxy serves no gateway listener on port {port}")
        text = host.decode("latin-1") if isinstance(host, bytes) else host
        listener, route = self.gateway.route(port, text)
        found = Destination(listener.config.name, route, text, port)
        if len(self.gateway_destinations) < MAX_RESOLVED_NAMES:
            self.gateway_destinations[key] = found
        return found

    @property
    def registry_only(self) -> bool:
        """Whether this proxy's namespace forbids destinations the registry does not name."""
        inbound = self.inbound
        return inbound is not None and inbound.egress_policy == "REGISTRY_ONLY"

    def egress_denied_detail(self, destination: str) -> str:
        """What an operator reads when a call leaving the mesh was refused."""
        namespace = self.inbound.namespace if self.inbound is not None else "?"
        return (
            f"{destination} is not a Service in the registry, and namespace {namespace} has "
            "egress policy REGISTRY_ONLY: declare it as an external Service (external: true), "
            "or set the Namespace's egress policy to ALLOW_ANY"
        )

    def service_for(self, host: str) -> str | None:
        """The service a Host header (or VIP) names; a `:port` suffix is ignored."""
        name = host.lower()
        found = self.hosts.get(name)
        if found is None and ":" in name and not name.endswith("]"):
            found = self.hosts.get(name.rsplit(":", 1)[0])
        return found


def build_active_config(
    entries: dict[str, Entry],
    version: str,
    rng: random.Random,
    previous: ActiveConfig | None = None,
) -> ActiveConfig:
    """Parse and compile a snapshot; raises `InvalidEntry` or `ValueError` to NACK it.

    Rate-limit buckets whose policy did not change are carried over from `previous`,
    so a config push does not refill every bucket.
    """
    active = ActiveConfig(version=version)
    for name, entry in entries.items():
        body = cfg.parse_entry(name, entry.body)
        if isinstance(body, cfg.InboundConfig):
            active.inbound = body
        elif isinstance(body, cfg.ServiceRoute):
            active.routes[body.service] = _compiled(body, rng)
            for host in body.hosts:
                active.hosts[host.lower()] = body.service
            if body.vip:
                active.hosts[body.vip] = body.service
        elif isinstance(body, cfg.Cluster):
            active.clusters[body.name] = body
        elif isinstance(body, cfg.EndpointSet):
            active.endpoints[body.cluster] = body
        elif isinstance(body, cfg.Unresolved):
            active.unresolved[body.subscription] = body.reason
        elif isinstance(body, cfg.GatewayConfig):
            active.gateway = build_gateway(body, lambda route: _compiled(route, rng))
    _check_references(active)
    if active.inbound is not None:
        active.inbound_ports = {p.port: p for p in active.inbound.ports}
        active.authorizer = Authorizer(active.inbound.authorization)
        kept = {f.name: f for f in previous.rate_limits} if previous else {}
        for limit in active.inbound.rate_limits:
            old = kept.get(limit.name)
            fresh = RateLimitFilter(limit)
            same = old is not None and (old.bucket.rate_per_second, old.bucket.burst) == (
                fresh.bucket.rate_per_second,
                fresh.bucket.burst,
            )
            if same and old is not None:
                fresh.bucket = old.bucket
            active.rate_limits.append(fresh)
    return active


def _compiled(body: cfg.ServiceRoute, rng: random.Random) -> CompiledRoute:
    """A route's matchers, with each rule's filter chain attached."""
    compiled = compile_route(body)
    for rule in compiled.rules:
        rule.state = build_chain(rule.rule, rng)
    return compiled


def _check_references(active: ActiveConfig) -> None:
    routes = list(active.routes.items())
    if active.gateway is not None:
        for port in active.gateway.ports.values():
            for listener in port.listeners.values():
                name = f"gateway listener {listener.config.name}"
                routes += [(name, route) for route in listener.virtual_hosts.values()]
                if any(b.cluster not in active.clusters for b in listener.config.tcp_backends):
                    raise ValueError(f"{name} relays to a cluster this snapshot does not define")
    for owner, route in routes:
        for rule in route.rules:
            for backend in rule.rule.backends:
                if backend.cluster not in active.clusters:
                    raise ValueError(
                        f"route {owner} rule {rule.rule.name} sends to cluster "
                        f"{backend.cluster!r}, which this snapshot does not define"
                    )


def chain_of(rule_state: object) -> RuleChain:
    assert isinstance(rule_state, RuleChain)
    return rule_state
