"""Listener roles: what a listener's requests are to the proxy, fixed when it is bound.

A role answers the questions whose answers used to be string comparisons on a
listener's kind: how a request's destination is found, where authorization applies,
and which side of the call the telemetry describes (its `TrafficSide`).

- `SidecarOutbound`: a local app's calls; the destination is the service its Host (or
  a local listener's one service, `reference`) names, subscribed on demand.
- `GatewayListener`: a gateway's port; the destination is a virtual host of the
  listener's routes, and the gateway's AuthorizationPolicies say who may pass.
- `SidecarInbound`: a peer's calls to the local app; authorization and rate limits
  apply before anything else, and the request goes to the app, not through a route.

Both entry points fill in the request's plan (`cluster`, and for a routed request its
`rule` and filter `chain`): `plan_now` synchronously, or False when something must be
awaited (an on-demand subscription, a delay fault, a mirror), `plan` as a coroutine.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg
from mycelium.proxy.destination import strip_port
from mycelium.proxy.errors import EgressDenied, NoHealthyUpstream, NoRoute, UnknownService
from mycelium.proxy.filters.authorization import http_request
from mycelium.proxy.protocols.headers import add_forwarding, client_certificate_field
from mycelium.proxy.router.mirror import mirror_cluster
from mycelium.telemetry import GATEWAY, INBOUND, LOCAL, OUTBOUND, TrafficSide

if TYPE_CHECKING:
    from mycelium.proxy.active_config import ActiveConfig, Destination
    from mycelium.proxy.filters.chain import RuleChain
    from mycelium.proxy.router.engine import Engine
    from mycelium.proxy.router.request import ProxiedRequest
    from mycelium.proxy.routing import CompiledRule


class Role:
    """A listener's role; the subclasses say how its requests are planned."""

    __slots__ = ("mesh_tls", "port", "side")
    # A serving listener's port as the config describes it (PeerAuthentication mode,
    # the app's target port), when the listener was bound for one.
    inbound_port: cfg.InboundPort | None = None

    def __init__(self, side: TrafficSide, port: int | None, *, mesh_tls: bool = False) -> None:
        self.side = side
        self.port = port  # the service port requests are for, when the listener knows it
        # Whether a client may open with the mesh's mTLS (ended with the proxy's SVID, the
        # peer's identity then known to policies).
        self.mesh_tls = mesh_tls

    def plan_now(self, request: ProxiedRequest, engine: Engine) -> bool:
        raise NotImplementedError

    async def plan(self, request: ProxiedRequest, engine: Engine) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self.port})"


class _RoutedRole(Role):
    """A role whose requests follow a route: a destination, a rule, its filters, a
    backend picked by weight."""

    __slots__ = ()
    # Whether the AuthorizationPolicies in force on the port decide who may pass, once
    # the destination is known (a gateway's); an attribute, not a method: it is asked
    # on every request's synchronous path.
    authorizes = False

    def destination_now(self, config: ActiveConfig, request: ProxiedRequest) -> Destination | None:
        raise NotImplementedError

    async def destination(
        self, engine: Engine, request: ProxiedRequest
    ) -> tuple[ActiveConfig, Destination]:
        raise NotImplementedError

    def plan_now(self, request: ProxiedRequest, engine: Engine) -> bool:
        config = engine.active
        destination = self.destination_now(config, request)
        if destination is None:
            return False  # unknown yet: `plan` subscribes and waits for its config
        route = destination.route
        rule = route.catch_all
        if rule is None:
            rule = route.match(request.request_facts())
            if rule is None:
                return False  # `plan` answers it (no route)
        if rule.waits:
            return False
        if self.authorizes:
            authorize(request, config, self.port or 0, engine)
        request.host = destination.host or request.host or request.host_value.decode("latin-1")
        request.service = destination.service
        if request.port is None:
            request.port = destination.port
        request.rule_name = rule.rule.name
        chain: RuleChain = rule.state
        for request_filter in chain.request:
            request_filter.on_request(request)  # no delay: `rule.waits` would have said so
        self._pick_backend(request, engine, config, rule, chain)
        return True

    async def plan(self, request: ProxiedRequest, engine: Engine) -> None:
        facts = request.request_facts()
        config, destination = await self.destination(engine, request)
        if self.authorizes:
            authorize(request, config, self.port or 0, engine)
        request.service = destination.service
        if request.port is None:
            request.port = destination.port
        rule = destination.route.match(facts)
        if rule is None:
            raise NoRoute(
                f"no rule of service {destination.service} matches {facts.method} {facts.path}"
            )
        request.rule_name = rule.rule.name
        chain: RuleChain = rule.state
        for request_filter in chain.request:
            delay = request_filter.on_request(request)
            if delay:
                await asyncio.sleep(delay)
        port = self._pick_backend(request, engine, config, rule, chain)
        request.trace()
        policy = rule.rule.mirror
        if policy is not None:
            mirror_to = mirror_cluster(engine, config, policy, port)
            if mirror_to is not None:
                request.mirror(mirror_to)

    def _pick_backend(
        self,
        request: ProxiedRequest,
        engine: Engine,
        config: ActiveConfig,
        rule: CompiledRule,
        chain: RuleChain,
    ) -> int:
        backend = rule.only or rule.pick_backend(engine.rng.random())
        if backend is None:
            raise NoHealthyUpstream(f"every backend of rule {rule.rule.name} has weight 0")
        port = backend.port or request.port or 0
        cluster = request.cluster = engine.cluster(config, backend.cluster, port)
        request.cluster_name = cluster.name
        request.rule = rule
        request.chain = chain
        return port


class SidecarOutbound(_RoutedRole):
    """A local app's calls, by the service their Host names; on a local listener
    (`reference` set), to the one service that listener serves."""

    __slots__ = ("reference",)

    def __init__(
        self, *, reference: str | None = None, port: int | None = None, local: bool = False
    ) -> None:
        # local: an explicit listener for one service (a transparent connection to a
        # service's address also knows its service, but is an outbound call)
        super().__init__(LOCAL if local else OUTBOUND, port)
        self.reference = reference

    def destination_now(self, config: ActiveConfig, request: ProxiedRequest) -> Destination | None:
        key = self.reference or request.host_value
        # the cache `config.destination` reads first, read here: once per request
        return config.destinations.get(key) or config.destination(key)

    async def destination(
        self, engine: Engine, request: ProxiedRequest
    ) -> tuple[ActiveConfig, Destination]:
        name = self.reference or request.host
        key: str | bytes = self.reference or request.host.encode("latin-1")
        config = engine.active
        found = config.destination(key)
        if found is None:
            await engine.resolve(name)
            config = engine.active
            found = config.destination(key)
            if found is None:
                raise _unknown_destination(config, name)
        return config, found

    def __repr__(self) -> str:
        return f"SidecarOutbound(reference={self.reference!r}, port={self.port})"


class GatewayListener(_RoutedRole):
    """A gateway listener's port: its virtual hosts route each request, and the
    gateway's AuthorizationPolicies say who may pass through it."""

    __slots__ = ()
    authorizes = True

    def __init__(self, port: int, *, mesh_tls: bool = False) -> None:
        # mesh_tls: the sidecars calling a gateway's plain HTTP port (an egress gateway)
        # come over mTLS
        super().__init__(GATEWAY, port, mesh_tls=mesh_tls)

    def destination_now(self, config: ActiveConfig, request: ProxiedRequest) -> Destination:
        # raises a 404 when no listener on the port serves the host
        return config.gateway_destination(self.port or 0, request.host_value)

    async def destination(
        self, engine: Engine, request: ProxiedRequest
    ) -> tuple[ActiveConfig, Destination]:
        config = engine.active
        return config, config.gateway_destination(self.port or 0, request.host)


class SidecarInbound(Role):
    """A peer's calls to the local app on `port`: authorized and rate limited first,
    given forwarding fields, then sent to the app (`inbound_port` says on which of its
    ports, and for which service)."""

    __slots__ = ("inbound_port",)

    def __init__(self, port: int, inbound_port: cfg.InboundPort | None = None) -> None:
        super().__init__(INBOUND, port, mesh_tls=True)  # the peers are other proxies
        self.inbound_port = inbound_port

    def plan_now(self, request: ProxiedRequest, engine: Engine) -> bool:
        request.request_facts()
        config = engine.active
        port = self.port or 0
        authorize(request, config, port, engine)
        for limit in config.rate_limits:
            if limit.applies(port):
                limit.on_request(request)
        request.headers = add_forwarding(
            request.headers,
            client_address=request.peer_host,
            proto="http",
            host=request.host_value or None,
            client_certificate=client_certificate_field(
                config.inbound.identity if config.inbound else None, request.peer_principal
            ),
        )
        inbound = self.inbound_port or config.inbound_ports.get(port)
        target_port = inbound.target_port if inbound is not None else port
        request.service = inbound.service if inbound is not None else ""
        http2 = inbound is not None and inbound.protocol in ("HTTP2", "GRPC")
        cluster = request.cluster = engine.local_app(target_port, http2=http2)
        request.cluster_name = cluster.name
        request.rule = None
        request.chain = None
        return True

    async def plan(self, request: ProxiedRequest, engine: Engine) -> None:
        self.plan_now(request, engine)
        request.trace()


def authorize(request: ProxiedRequest, config: ActiveConfig, port: int, engine: Engine) -> None:
    """The AuthorizationPolicies in force on `port`; raises `Denied` (403 `denied`)."""
    authorizer = config.authorizer
    if authorizer.active:
        access = http_request(
            request.peer_host,
            port,
            request.method,
            request.target,
            request.headers,
            principal=request.peer_principal,
        )
        authorizer.enforce(access, engine.counters)


def _unknown_destination(config: ActiveConfig, name: str) -> EgressDenied | UnknownService:
    if config.registry_only:
        return EgressDenied(config.egress_denied_detail(name))
    service = config.service_for(name)
    if service is not None:
        return UnknownService(f"no route for service {service} in config {config.version}")
    reason = config.unresolved.get(strip_port(name))
    return UnknownService(reason or f"no service is known by the name {name!r}")
