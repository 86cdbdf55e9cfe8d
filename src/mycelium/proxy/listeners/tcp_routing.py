"""Per accepted connection: relay it as bytes (L4), or hand it to the HTTP handlers.

Transparent listeners learn where the client meant to go from SO_ORIGINAL_DST; an
explicit local listener knows its service. Either way the service port decides: an
opaque, TCP or TLS port is relayed to an endpoint of a cluster chosen by the route's
`tcp_backends` weights, at once, without waiting for the client's first bytes (a
server-speaks-first protocol must not stall); an HTTP port goes to protocol detection
and the HTTP/1 or HTTP/2 handlers, with a role (`router.roles`) that names the service and port.

An outbound destination no config names, even after subscribing on demand by its
address, is relayed to that very address (passthrough, counted `tcp_passthrough`) —
unless the namespace's egress policy is REGISTRY_ONLY: then the connection is closed
(counted `refused_egress_denied`).
Bytes that arrive while the decision waits for config are held and replayed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from mycelium.discovery import config as cfg
from mycelium.identity.tls import spiffe_peer
from mycelium.net.dial import Dialer
from mycelium.net.original_dst import OriginalDestinationError, original_destination
from mycelium.net.relay import TcpRelay
from mycelium.net.tls_session import TlsSession
from mycelium.proxy.errors import Denied
from mycelium.proxy.filters.authorization import AccessRequest
from mycelium.proxy.listeners.detecting import listener_protocol
from mycelium.proxy.listeners.opaque_inbound import OpaqueInbound
from mycelium.proxy.protocols.peer_preamble import encode_preamble
from mycelium.proxy.router.roles import Role, SidecarInbound, SidecarOutbound
from mycelium.proxy.settings import LocalUpstream
from mycelium.telemetry import FinishedConnection, OpenedConnection

if TYPE_CHECKING:
    from mycelium.proxy.active_config import ActiveConfig
    from mycelium.proxy.core import ProxyCore

# Relayed connections that move no byte this long are closed: long enough for a quiet
# database session, short enough that abandoned connections do not pile up (Istio's
# default TCP idle timeout is one hour).
TCP_IDLE_TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class RelayTo:
    """Relay the connection's bytes to `host:port` (`cluster` "" for passthrough),
    through mTLS to a peer proxy that must be `identity` when `mtls`."""

    host: str
    port: int
    cluster: str = ""
    mtls: bool = False
    identity: str = ""
    service: str = ""  # the service key, for telemetry ("" for passthrough)


@dataclass(frozen=True, slots=True)
class SniffMtls:
    """An opaque inbound port that may receive the mesh's mTLS: look at the first
    bytes (see opaque_inbound)."""

    inbound: cfg.InboundPort


@dataclass(frozen=True, slots=True)
class ServeHttp:
    role: Role


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    counter: str = "no_tcp_upstream"  # the `refused_<counter>` that counts it


type Decision = RelayTo | ServeHttp | Refuse | SniffMtls


def is_opaque(protocol: cfg.Protocol, opaque: bool) -> bool:
    """Bytes only: the proxy must not wait for (or parse) what the client sends."""
    return opaque or protocol in ("TCP", "TLS")


def service_port(route: cfg.ServiceRoute, port: int | None) -> cfg.ServicePort | None:
    """The route's port `port`, or its first port when `port` is None."""
    if port is None:
        return route.ports[0] if route.ports else None
    return next((p for p in route.ports if p.port == port), None)


def pick_weighted(backends: list[cfg.WeightedCluster], roll: float) -> cfg.WeightedCluster | None:
    total = sum(max(b.weight, 0) for b in backends)
    if total <= 0:
        return None
    point = roll * total
    for backend in backends:
        point -= max(backend.weight, 0)
        if point < 0:
            return backend
    return backends[-1]


def relay_to_service(
    core: ProxyCore, config: ActiveConfig, route: cfg.ServiceRoute, port: int
) -> RelayTo | Refuse:
    return relay_to_backends(
        core, config, route.tcp_backends, port, f"service {route.service}", service=route.service
    )


def relay_to_backends(
    core: ProxyCore,
    config: ActiveConfig,
    backends: list[cfg.WeightedCluster],
    port: int,
    owner: str,
    *,
    service: str = "",
) -> RelayTo | Refuse:
    """Where to relay a connection for `owner` (a service, a gateway listener): an
    endpoint of the backend cluster drawn by weight, through mTLS when it runs a proxy."""
    backend = pick_weighted(backends, core.rng.random())
    if backend is None or backend.cluster not in config.clusters:
        return Refuse(f"{owner} has no TCP backend")
    cluster = core.cluster(config, backend.cluster, backend.port or port)
    endpoint = cluster.pick(time.monotonic())
    if endpoint is None:
        return Refuse(f"cluster {cluster.name} has no healthy endpoint")
    if core.speaks_mtls(cluster, endpoint):
        return RelayTo(
            endpoint.address, endpoint.port, cluster.name, True, endpoint.identity, service
        )
    return RelayTo(endpoint.address, endpoint.port, cluster.name, service=service)


def decide_for_service(
    core: ProxyCore,
    config: ActiveConfig,
    service: str,
    port: int | None,
    *,
    local: bool,
) -> Decision | None:
    """For a known service: relay or HTTP. None if the port is not one of its ports."""
    compiled = config.routes.get(service)
    if compiled is None:
        return None
    found = service_port(compiled.route, port)
    if found is None:
        return None
    if is_opaque(found.protocol, found.opaque):
        return relay_to_service(core, config, compiled.route, found.port)
    return ServeHttp(SidecarOutbound(reference=service, port=found.port, local=local))


def decide_outbound(
    core: ProxyCore, config: ActiveConfig, address: str, port: int
) -> Decision | None:
    """A transparent outbound connection to `address:port`; None while unknown."""
    service = config.hosts.get(address)
    if service is None:
        return None
    return decide_for_service(core, config, service, port, local=False)


def decide_local(core: ProxyCore, config: ActiveConfig, upstream: LocalUpstream) -> Decision | None:
    resolved = config.resolve(upstream.service)
    if resolved is None:
        return None
    return decide_for_service(core, config, resolved[0], upstream.port, local=True)


def decide_inbound(core: ProxyCore, config: ActiveConfig, port: int, peer: str) -> Decision:
    """A transparent inbound connection to the workload's `port` from `peer`."""
    inbound = config.inbound_ports.get(port)
    if inbound is None:
        # not a service port: the app's own business
        return RelayTo(core.settings.app_address, port)
    if is_opaque(inbound.protocol, inbound.opaque):
        if inbound.mtls == "STRICT" or (inbound.mtls == "PERMISSIVE" and core.svid is not None):
            return SniffMtls(inbound)
        return admit_to_app(core, config, inbound, peer, None)
    return ServeHttp(SidecarInbound(inbound.port, inbound))


def admit_to_app(
    core: ProxyCore,
    config: ActiveConfig,
    inbound: cfg.InboundPort,
    peer: str,
    principal: str | None,
) -> RelayTo | Refuse:
    """Relay an inbound opaque connection to the app, if the workload's policies let
    `peer` (with SPIFFE ID `principal` when it came through mTLS) in."""
    if config.authorizer.active:
        # Opaque bytes: only the L4 parts of the workload's policies can apply.
        request = AccessRequest(peer, inbound.port, principal=principal)
        try:
            config.authorizer.enforce(request, core.counters)
        except Denied as exc:
            return Refuse(f"denied: {exc.detail}", "denied")
    return RelayTo(
        core.settings.app_address,
        inbound.target_port,
        f"inbound|{inbound.target_port}",
        service=inbound.service,
    )


def passthrough(config: ActiveConfig, address: str, port: int) -> RelayTo | Refuse:
    """An outbound connection to a destination no Service names: relayed as addressed,
    unless the namespace allows only what the registry names."""
    if config.registry_only:
        return Refuse(config.egress_denied_detail(f"{address}:{port}"), "egress_denied")
    return RelayTo(address, port)


class TcpRouting:
    """The listeners' shared part: the relays in progress (for draining) and counters."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.relays = core.relays  # shared with upgraded HTTP connections, for the drain
        self.dialer = Dialer(mark=core.socket_mark)

    def protocol(self, role: ConnectionRole) -> ConnectionRouter:
        return ConnectionRouter(self, role)

    def admit(
        self,
        transport: asyncio.Transport,
        inbound: cfg.InboundPort,
        peer: str,
        principal: str | None,
        *,
        held: bytes,
        eof: bool,
        introduction: bytes | None = None,
    ) -> None:
        """Relay an inbound opaque connection to the app, or refuse it by policy;
        `introduction` is the calling proxy's (mTLS only), for telemetry."""
        decision = admit_to_app(self.core, self.core.active, inbound, peer, principal)
        self.relay_or_refuse(transport, decision, held, eof, peer, introduction=introduction)

    def relay_or_refuse(
        self,
        transport: asyncio.Transport,
        decision: RelayTo | Refuse,
        held: bytes,
        eof: bool,
        peer: str,
        *,
        introduction: bytes | None = None,
    ) -> None:
        """Carry out a decision: relay the connection, or count, log and abort it."""
        if isinstance(decision, Refuse):
            self.core.refused(decision.counter, peer)
            self.core.log.warning("%s", decision.reason)
            transport.abort()
            return
        self.start_relay(transport, decision, held, eof, introduction)

    def abort_all(self) -> None:
        for relay in list(self.relays):
            relay.abort()

    def start_relay(
        self,
        transport: asyncio.Transport,
        target: RelayTo,
        held: bytes,
        eof: bool,
        introduction: bytes | None = None,
    ) -> None:
        core = self.core
        preamble = b""
        if target.mtls:
            # To a peer proxy: our introduction goes first, inside the mTLS (its ALPN
            # says so), as HTTP callers send theirs in a field.
            preamble = encode_preamble(core.introduction)
            held = preamble + held
        relay = TcpRelay(
            transport,
            initial_data=held,
            downstream_eof=eof,
            idle_timeout=TCP_IDLE_TIMEOUT_SECONDS,
        )
        if relay.done:
            return
        tls = None
        if target.mtls:
            # the peer proxy must be the endpoint's registered identity ("" for any)
            check = spiffe_peer(target.identity)
            tls = TlsSession(core.relay_client_tls(), server_side=False, verify_peer=check)
        relay.connect(target.host, target.port, dialer=self.dialer, tls=tls, counters=core.counters)
        self.relays.add(relay)
        core.counters["tcp_connections"] += 1
        opened: OpenedConnection | None = None
        if core.connection_observers:
            identity = transport.get_extra_info("peer_identity")
            opened = OpenedConnection(
                direction="inbound" if target.cluster.startswith("inbound|") else "outbound",
                service=target.service,
                cluster=target.cluster,
                upstream_host=f"{target.host}:{target.port}",
                peer_principal=str(identity.uri) if identity else None,
                mtls_upstream=target.mtls,
                peer_metadata=introduction if identity else None,
            )
            core.connection_opened(opened)
        if not target.cluster:
            core.counters["tcp_passthrough"] += 1
        core.spawn(self._finished(relay, opened, transport, len(preamble)))

    async def _finished(
        self,
        relay: TcpRelay,
        opened: OpenedConnection | None,
        transport: asyncio.Transport,
        preamble: int,
    ) -> None:
        peer = transport.get_extra_info("peername")
        try:
            result = await relay.wait()
        finally:
            self.relays.discard(relay)
        core = self.core
        core.counters[f"tcp_ended_{result.ended_by}"] += 1
        # the client's bytes only: not the introduction we sent before them
        from_client = max(0, result.bytes_to_upstream - preamble)
        core.counters["tcp_bytes_to_upstream"] += from_client
        core.counters["tcp_bytes_to_downstream"] += result.bytes_to_downstream
        if opened is not None:  # observers were told of the start: tell them the end
            upstream = result.upstream_address
            core.connection_finished(
                FinishedConnection(
                    direction=opened.direction,
                    service=opened.service,
                    cluster=opened.cluster,
                    upstream_host=f"{upstream[0]}:{upstream[1]}" if upstream else "",
                    peer=peer[0] if peer else "",
                    peer_principal=opened.peer_principal,
                    mtls_upstream=opened.mtls_upstream,
                    bytes_received=from_client,
                    bytes_sent=result.bytes_to_downstream,
                    duration=result.duration,
                    ended_by=str(result.ended_by),
                    peer_metadata=opened.peer_metadata,
                )
            )


class ConnectionRole:
    """A routed listener's role: where its connections meant to go, and what to do
    with them once the config says (or, waiting for it, does not say) what is there."""

    def destination(self, transport: asyncio.BaseTransport) -> tuple[str, int] | None:
        """Where the client meant to go (raises `OriginalDestinationError` when the
        connection was not redirected here); None when the listener itself says."""
        return original_destination(transport.get_extra_info("socket"))

    def not_redirected(self) -> Decision | None:
        """What a connection that was not redirected becomes; None: it is refused."""
        return None

    def decide(
        self, core: ProxyCore, config: ActiveConfig, to: tuple[str, int] | None, peer: str
    ) -> Decision | None:
        """Relay or HTTP, as the config says; None while it does not know yet."""
        raise NotImplementedError

    def name_to_resolve(self, to: tuple[str, int] | None) -> str:
        assert to is not None
        return to[0]

    def unresolved(self, core: ProxyCore, to: tuple[str, int] | None) -> Decision:
        """The decision once the wait for config is over and it still says nothing."""
        assert to is not None
        return passthrough(core.active, *to)


class TransparentOutbound(ConnectionRole):
    """The app's connections, redirected to the proxy by the pod's nftables."""

    def not_redirected(self) -> Decision:
        return ServeHttp(SidecarOutbound())  # dialled directly, like an explicit proxy

    def decide(
        self, core: ProxyCore, config: ActiveConfig, to: tuple[str, int] | None, peer: str
    ) -> Decision | None:
        assert to is not None
        return decide_outbound(core, config, *to)


class TransparentInbound(ConnectionRole):
    """Peers' connections to the app: redirected by nftables, or (explicit mode) on a
    listener bound for one service port, `port`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port

    def destination(self, transport: asyncio.BaseTransport) -> tuple[str, int] | None:
        if self.port is not None:
            return ("", self.port)  # no SO_ORIGINAL_DST to read there
        return super().destination(transport)

    def decide(
        self, core: ProxyCore, config: ActiveConfig, to: tuple[str, int] | None, peer: str
    ) -> Decision:
        assert to is not None
        return decide_inbound(core, config, to[1], peer)


class LocalService(ConnectionRole):
    """An explicit local listener for one service (`--upstream SERVICE=PORT`)."""

    def __init__(self, upstream: LocalUpstream) -> None:
        self.upstream = upstream

    def destination(self, transport: asyncio.BaseTransport) -> None:
        return None

    def decide(
        self, core: ProxyCore, config: ActiveConfig, to: tuple[str, int] | None, peer: str
    ) -> Decision | None:
        return decide_local(core, config, self.upstream)

    def name_to_resolve(self, to: tuple[str, int] | None) -> str:
        return self.upstream.service

    def unresolved(self, core: ProxyCore, to: tuple[str, int] | None) -> Decision:
        upstream = self.upstream
        role = SidecarOutbound(reference=upstream.service, port=upstream.port, local=True)
        return ServeHttp(role)  # HTTP answers with what is missing


class ConnectionRouter(asyncio.Protocol):
    """An accepted connection's first protocol: decides, then hands the transport over."""

    def __init__(self, routing: TcpRouting, role: ConnectionRole) -> None:
        self._routing = routing
        self._role = role
        self._transport: asyncio.Transport | None = None
        self._destination: tuple[str, int] | None = None
        self._held: list[bytes] = []
        self._eof = False
        self._waiting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        core = self._routing.core
        try:
            self._destination = self._role.destination(transport)
        except OriginalDestinationError as exc:
            instead = self._role.not_redirected()
            if instead is not None:
                self._hand_over(instead)
                return
            core.refused("not_redirected", peer_text(self._transport))
            core.log.info("%s", exc)
            self._transport.close()
            return
        decision = self._decide()
        if decision is not None:
            self._hand_over(decision)
            return
        self._transport.pause_reading()
        self._waiting = core.spawn(self._wait_for_config())

    def data_received(self, data: bytes) -> None:
        self._held.append(data)
        # uvloop may resume reading behind our back: hold at most what already came
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        return True  # keep the transport: the relay half-closes upstream in turn

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._waiting is not None:
            self._waiting.cancel()

    def _decide(self) -> Decision | None:
        core = self._routing.core
        transport = self._transport
        peername = transport.get_extra_info("peername") if transport is not None else None
        peer = peername[0] if peername else ""
        return self._role.decide(core, core.active, self._destination, peer)

    async def _wait_for_config(self) -> None:
        core = self._routing.core
        await core.resolve(self._role.name_to_resolve(self._destination))
        decision = self._decide()
        if decision is None:
            decision = self._role.unresolved(core, self._destination)
        self._waiting = None
        self._hand_over(decision)

    def _hand_over(self, decision: Decision) -> None:
        transport = self._transport
        if transport is None:
            return
        self._transport = None
        held, self._held = b"".join(self._held), []
        core = self._routing.core
        if isinstance(decision, Refuse | RelayTo):
            self._routing.relay_or_refuse(
                transport, decision, held, self._eof, peer_text(transport)
            )
            return
        if isinstance(decision, SniffMtls):
            peername = transport.get_extra_info("peername")
            source = peername[0] if peername else ""
            sniffing = OpaqueInbound(self._routing, decision.inbound, source)
            transport.set_protocol(sniffing)
            sniffing.connection_made(transport)
            if not transport.is_reading():
                transport.resume_reading()
            if held and not transport.is_closing():
                sniffing.data_received(held)
            if self._eof and not transport.is_closing():
                sniffing.eof_received()
            return
        protocol = listener_protocol(core, decision.role)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if not transport.is_reading():
            transport.resume_reading()
        if held and not transport.is_closing():
            protocol.data_received(held)
        if self._eof and not transport.is_closing():
            protocol.eof_received()


def peer_text(transport: asyncio.BaseTransport) -> str:
    """The client's `host:port` as logs and refusals name it ("?" when unknown)."""
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"
