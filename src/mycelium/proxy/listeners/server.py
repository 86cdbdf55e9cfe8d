"""The proxy process: listeners bound, discovery running, drained on SIGTERM.

Start-up binds every listener before serving, so a port clash fails at once with the
port in the message. Config comes only through discovery (the last-known-good snapshot
from disk first, if any). Inbound listeners in explicit mode follow the config: one per
inbound service port, opened and closed as services come and go. So do a gateway's: one
per port of its compiled listeners, on the gateway address.

Drain (SIGTERM): stop accepting, report not-ready, let requests in flight finish until
the deadline (responses say `connection: close`, idle keep-alive connections close at
once), then close what is left and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

try:
    import uvloop
except ImportError:  # uvloop does not build everywhere; asyncio's loop works too
    uvloop = None  # type: ignore[assignment]

from mycelium import __version__
from mycelium.discovery import config as cfg
from mycelium.discovery.client import DiscoveryClient
from mycelium.errors import MeshError
from mycelium.identity.renewal import run_identity
from mycelium.net.dial import Dialer
from mycelium.proxy.active_config import ActiveConfig
from mycelium.proxy.admin import AdminServer
from mycelium.proxy.core import ProxyCore
from mycelium.proxy.gateway import PortFamily
from mycelium.proxy.listeners.detecting import listener_protocol
from mycelium.proxy.listeners.gateway_connections import GatewayConnection
from mycelium.proxy.listeners.tcp_routing import (
    ConnectionRole,
    LocalService,
    TcpRouting,
    TransparentInbound,
    TransparentOutbound,
    is_opaque,
)
from mycelium.proxy.router.roles import GatewayListener, Role, SidecarInbound, SidecarOutbound
from mycelium.proxy.settings import ListenAddress, ProxySettings
from mycelium.telemetry.otlp import CollectorAddress, Connect, OtlpHttpExporter
from mycelium.telemetry.tap import Tap
from mycelium.telemetry.tracing import Tracer

log = logging.getLogger("mycelium.proxy")

# At drain, how long the spans still queued get to reach the collector.
FINAL_EXPORT_SECONDS = 2.0


_BIND_ADVICE = "stop what holds the port (ss -ltnp shows it), or give this proxy another"


def _why(exc: OSError) -> str:
    # uvloop's message repeats the address; the errno's own text says it once
    return os.strerror(exc.errno) if exc.errno else str(exc)


class ListenError(MeshError, OSError):
    """A listener could not bind; the message names the address and what to do. A
    MeshError: the CLI prints its sentence, not a traceback."""


class ProxyServer:
    def __init__(self, settings: ProxySettings, *, join_token: str | None = None) -> None:
        self.settings = settings
        # A secret: kept out of the settings (which travel on a command line) and logs.
        self._join_token = join_token
        self.core = ProxyCore(settings)
        self.admin = AdminServer(self.core)
        self.tcp = TcpRouting(self.core)
        self._servers: list[asyncio.Server] = []  # data listeners
        self._operations: list[asyncio.Server] = []  # admin and health: open until the end
        self._inbound: dict[int, asyncio.Server] = {}
        # gateway role: port -> (how its connections are served, its listener)
        self._gateway: dict[int, tuple[PortFamily, asyncio.Server]] = {}
        self._opening: set[int] = set()
        self._gateway_problems: list[str] = []
        self.bound: dict[str, ListenAddress] = {}  # name -> actual address (port 0 resolved)
        self.span_exporter: OtlpHttpExporter | None = None
        self.tap: Tap | None = None

    async def start(self) -> None:
        settings, core = self.settings, self.core
        if settings.access_log == "-":
            core.open_access_log(sys.stdout)
        elif settings.access_log is not None:
            core.open_access_log(_open_for_append(Path(settings.access_log)))
        if settings.trace_collector is not None:
            self._start_tracing(settings.trace_collector)
        subscriptions = list(settings.subscriptions) + [u.service for u in settings.local_upstreams]
        client = DiscoveryClient(
            settings.controllers,
            settings.node,
            trust_bundle=settings.trust_bundle,
            state_dir=settings.state_dir,
            on_update=core.accept_config,
            subscriptions=subscriptions,
            # authenticates the stream until our SVID does (see identity/renewal.py)
            token=self._join_token,
            registered=not settings.wait_for_join,
        )
        core.discovery = client
        # `myc tap`, through the controller: idle (and free) until it asks
        self.tap = Tap(
            client.send, endpoint=core.clusters.endpoint, own_principal=core.own_principal
        )
        client.on_tap = self.tap.command
        client.on_stream_lost.append(self.tap.stream_lost)
        core.request_observers.append(self.tap)
        core.on_config.append(self._follow_config)
        core.spawn(core.sweep())
        if self._join_token:
            token, self._join_token = self._join_token, None  # used once
            core.spawn(run_identity(core, token, core.rng))
        transparent = settings.mode == "transparent"
        if settings.outbound is not None and transparent:
            await self._listen_routed("outbound", settings.outbound, TransparentOutbound())
        elif settings.outbound is not None:
            await self._listen("outbound", settings.outbound, SidecarOutbound())
        if settings.inbound is not None and transparent:
            await self._listen_routed("inbound", settings.inbound, TransparentInbound())
        for upstream in settings.local_upstreams:
            # TCP or HTTP as the service port says, decided per connection
            await self._listen_routed(
                f"local:{upstream.service}", upstream.listen, LocalService(upstream)
            )
        if settings.admin is not None:
            server = await self._bind_stream(settings.admin, self.admin.serve_admin)
            self.bound["admin"] = _address_of(server)
            self._operations.append(server)
        if settings.health is not None:
            server = await self._bind_stream(settings.health, self.admin.serve_health)
            self.bound["health"] = _address_of(server)
            self._operations.append(server)
        if settings.metrics is not None:
            server = await self._bind_stream(settings.metrics, self.admin.serve_metrics)
            self.bound["metrics"] = _address_of(server)
            self._operations.append(server)
        await client.start()  # the saved snapshot (if any) is in force from here on
        if core.active.version:
            self._follow_config(core.active)
        self.admin.ready = True

    def _start_tracing(self, collector: str) -> None:
        """Spans for sampled requests, exported by a task of their own (telemetry/otlp)."""
        core, node = self.core, self.settings.node
        # Istio's service name for a proxy's spans: its app (canonical service) and
        # namespace; the instance is the proxy itself.
        app = node.labels.get("app") or node.workload or node.id
        exporter = OtlpHttpExporter(
            CollectorAddress.parse(collector),
            {
                "service.name": f"{app}.{node.namespace}",
                "service.namespace": node.namespace,
                "service.instance.id": node.id,
                "mycelium.role": node.role,
            },
            core.counters,
            connect=_marked_connect(core.socket_mark) if core.socket_mark is not None else None,
            scope_version=__version__,
        )
        core.tracer = Tracer(self.settings.trace_sampling, exporter.add)
        core.request_observers.append(core.tracer)
        core.spawn(exporter.run())
        self.span_exporter = exporter

    async def _listen(self, name: str, address: ListenAddress, role: Role) -> asyncio.Server:
        core = self.core

        def factory() -> asyncio.Protocol:
            # HTTP/1 or HTTP/2 (prior knowledge), told apart by the first bytes.
            return listener_protocol(core, role)

        return await self._bind(name, address, factory)

    async def _bind(
        self, name: str, address: ListenAddress, factory: Callable[[], asyncio.Protocol]
    ) -> asyncio.Server:
        """A data listener, named in `bound` and closed by the drain."""
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                factory, address.host, address.port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {address} for {name}: {_why(exc)}; {_BIND_ADVICE}"
            ) from exc
        self._servers.append(server)
        self.bound[name] = _address_of(server)
        return server

    async def _listen_routed(
        self, name: str, address: ListenAddress, role: ConnectionRole
    ) -> asyncio.Server:
        """A listener whose connections go to the TCP relay or to HTTP (see tcp_routing)."""
        tcp = self.tcp
        return await self._bind(name, address, lambda: tcp.protocol(role))

    async def _bind_stream(self, address: ListenAddress, handler: Any) -> asyncio.Server:
        try:
            return await asyncio.start_server(handler, address.host, address.port)
        except OSError as exc:
            raise ListenError(f"cannot listen on {address}: {_why(exc)}; {_BIND_ADVICE}") from exc

    def _follow_config(self, active: ActiveConfig) -> None:
        """Open and close explicit-mode inbound listeners as the config's ports change.

        Each listens on the inbound address at the app's target port: callers connect to
        a workload's address and target port, as they would without a mesh. A gateway's
        listeners follow the config the same way (`_follow_gateway`).
        """
        if self.settings.gateway_address is not None:
            self._follow_gateway(active)
        if self.settings.inbound_address is None:
            return
        wanted = {p.target_port: p for p in active.inbound_ports.values()}
        for port in list(self._inbound):
            if port not in wanted:
                self._inbound.pop(port).close()
        for target_port, inbound in wanted.items():
            if target_port not in self._inbound:
                self.core.spawn(self._open_inbound(target_port, inbound))

    async def _open_inbound(self, target_port: int, inbound: cfg.InboundPort) -> None:
        assert self.settings.inbound_address is not None
        if target_port in self._inbound:
            return
        address = ListenAddress(self.settings.inbound_address, target_port)
        name = f"inbound:{target_port}"
        try:
            if is_opaque(inbound.protocol, inbound.opaque):
                # relayed (or mTLS-ended first) as the router decides for that port
                role = TransparentInbound(inbound.port)
                server = await self._listen_routed(name, address, role)
            else:
                server = await self._listen(name, address, SidecarInbound(inbound.port, inbound))
        except ListenError as exc:
            log.error("%s", exc)
            return
        self._inbound[target_port] = server

    def _follow_gateway(self, active: ActiveConfig) -> None:
        """One listener per port of the gateway's listeners; a port whose kind (HTTP,
        TLS, TCP) changes is opened anew, a port no longer wanted is closed."""
        gateway = active.gateway
        wanted = {p.port: p.family for p in gateway.ports.values()} if gateway else {}
        for port, (family, server) in list(self._gateway.items()):
            if wanted.get(port) != family:
                del self._gateway[port]
                self.bound.pop(f"gateway:{port}", None)
                server.close()
        for port, family in wanted.items():
            if port not in self._gateway and port not in self._opening:
                self._opening.add(port)
                self.core.spawn(self._open_gateway(port, family))
        problems = gateway.problems if gateway is not None else []
        if problems != self._gateway_problems:
            self._gateway_problems = problems
            for problem in problems:
                log.warning("gateway config: %s", problem)

    async def _open_gateway(self, port: int, family: PortFamily) -> None:
        assert self.settings.gateway_address is not None
        address = ListenAddress(self.settings.gateway_address, port)
        name = f"gateway:{port}"
        tcp = self.tcp
        try:
            if family == "http":
                # Sidecars sending to an egress gateway come with mTLS; the edge in plaintext.
                role = GatewayListener(port, mesh_tls=True)
                server = await self._listen(name, address, role)
            else:
                server = await self._bind(
                    name, address, lambda: GatewayConnection(tcp, port, family)
                )
        except ListenError as exc:
            log.error("%s", exc)
            return
        finally:
            self._opening.discard(port)
        self._gateway[port] = (family, server)
        if self.core.active.gateway is None or port not in self.core.active.gateway.ports:
            self._follow_gateway(self.core.active)  # the config moved on while we bound

    async def drain(self, deadline_seconds: float | None = None) -> None:
        core = self.core
        # Idle connections close now, busy ones as their last request ends (see
        # ProxyCore.connections); relays run on until they end or the deadline.
        core.start_drain()
        for server in [*self._servers, *self._inbound.values()]:
            server.close()
        for _, server in self._gateway.values():
            server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(
                self.settings.drain_seconds if deadline_seconds is None else deadline_seconds
            ):
                await core.drain.released()
        for conn in list(core.connections):
            conn.abort()
        self.tcp.abort_all()
        core.pools.close_idle()
        core.mtls_pools.close_idle()
        core.h2_pools.close_all()
        for server in self._operations:
            server.close()
        if core.discovery is not None:
            await core.discovery.stop()
        if self.span_exporter is not None:
            # the last spans, if the collector takes them at once
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_EXPORT_SECONDS):
                    await self.span_exporter.flush()
        for task in list(core.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*core.tasks, return_exceptions=True)
        if core.access_log is not None:
            core.access_log.flush()

    async def stop(self) -> None:
        await self.drain(0)


def _marked_connect(mark: int) -> Connect:
    """Connections to the collector that the pod's interception lets through, as the
    proxy's own upstream connections are (transparent mode)."""
    dialer = Dialer(mark=mark)

    async def connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, protocol = await dialer.connect(
            lambda: asyncio.StreamReaderProtocol(reader), host, port
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return reader, writer

    return connect


def _open_for_append(path: Path) -> TextIO:
    return open(path, "a", buffering=1)


def _address_of(server: asyncio.Server) -> ListenAddress:
    host, port = server.sockets[0].getsockname()[:2]
    return ListenAddress(host, port)


async def serve(settings: ProxySettings, join_token: str | None = None) -> None:
    server = ProxyServer(settings, join_token=join_token)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = ", ".join(f"{name} {addr}" for name, addr in server.bound.items())
    print(f"proxy {settings.node.id} ready: {bound}", flush=True)
    await stop.wait()
    log.info("draining (up to %ss)", settings.drain_seconds)
    await server.drain()


def run_proxy(settings: ProxySettings, join_token: str | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if uvloop is None:
        asyncio.run(serve(settings, join_token))
    else:
        uvloop.run(serve(settings, join_token))
