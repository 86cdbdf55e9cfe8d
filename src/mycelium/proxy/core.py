"""The proxy's shared state, one object per process, handed to every connection.

It holds the active config (swapped whole when a snapshot is accepted), the live
clusters and connection pools (which outlive config changes), the set of open downstream
connections (for draining), every spawned task (tracked and discarded on completion),
and the few counters the admin endpoints report. It does no socket work itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import defaultdict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TextIO

from mycelium import __version__
from mycelium.discovery import config as cfg
from mycelium.discovery.client import DiscoveryClient, Snapshot
from mycelium.discovery.protocol import MAX_TRAFFIC_ROWS, TelemetryReport
from mycelium.identity.tls import Svid, client_context, server_context
from mycelium.net.drain import DrainSet, DrainTrigger
from mycelium.proxy.active_config import ActiveConfig, build_active_config
from mycelium.proxy.protocols.http1 import Http1Limits
from mycelium.proxy.settings import ON_DEMAND_WAIT_SECONDS, ProxySettings
from mycelium.proxy.upstream.clusters import ClusterRuntime, ClusterSet
from mycelium.proxy.upstream.http1_pool import (
    IDLE_TIMEOUT_SECONDS,
    MTLS_IDLE_TIMEOUT_SECONDS,
    EndpointPool,
    PoolSet,
)
from mycelium.proxy.upstream.http2_pool import Http2Pools
from mycelium.telemetry import (
    ConnectionObserver,
    FinishedConnection,
    OpenedConnection,
    RequestObserver,
)
from mycelium.telemetry.access_log import AccessLog
from mycelium.telemetry.metrics import PEER_HEADER, ProxyMetrics
from mycelium.telemetry.tracing import Tracer
from mycelium.telemetry.traffic_report import REPORT_SECONDS, TrafficReporter
from mycelium.telemetry.workload_labels import WorkloadLabels, encode_peer

if TYPE_CHECKING:
    from mycelium.net.relay import TcpRelay
    from mycelium.proxy.router.engine import DownstreamConnection
    from mycelium.proxy.upstream.endpoint import EndpointState

# How often connection timeouts (idle, slow request heads) are checked.
SWEEP_INTERVAL_SECONDS = 1.0


class ProxyCore:
    def __init__(self, settings: ProxySettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.log = logging.getLogger("mycelium.proxy")
        self.rng = rng or random.Random()
        self.active = ActiveConfig()
        self.clusters = ClusterSet(self.rng)
        # In transparent mode our own upstream connections carry the mark the pod's
        # nftables exempt from interception.
        self.socket_mark = settings.socket_mark if settings.mode == "transparent" else None
        self.pools = PoolSet(self.socket_mark)
        # Connections to other proxies, with our SVID; contexts follow renewals. Each
        # tells the peer proxy who we are, for its telemetry.
        node = settings.node
        # Who we are in telemetry: the workload (a pod's Deployment), app, version...
        self.workload_labels = WorkloadLabels.of(
            node.workload or node.id,
            node.namespace,
            node.labels,
            cluster=settings.cluster,
            local=True,
        )
        # (a TCP relay sends it as a preamble: proxy/protocols/peer_preamble.py)
        self.introduction = encode_peer(self.workload_labels)
        introduction = b"%s: %s\r\n" % (PEER_HEADER, self.introduction)
        self.mtls_pools = PoolSet(self.socket_mark, tls=self.client_tls, introduction=introduction)
        # HTTP/2 connections, plaintext and mTLS alike (its sweep starts with `serve`)
        self.h2_pools = Http2Pools(
            self.socket_mark, introduction=[(PEER_HEADER, self.introduction)]
        )
        self._tls_contexts: dict[str, tuple[Svid, ssl.SSLContext]] = {}
        self.http1_limits = Http1Limits()
        # The drain waits for both sets to empty: connections close once idle, byte pipes
        # (TCP services, upgraded connections) run until they end or the deadline.
        self.drain = DrainTrigger()
        self.draining = False  # a plain attribute: read on every keep-alive decision
        self.connections: DrainSet[DownstreamConnection] = DrainSet(
            self.drain, lambda conn: conn.close_if_idle()
        )
        self.relays: DrainSet[TcpRelay] = DrainSet(self.drain)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.left = False  # deregistered on request (admin POST /leave): about to stop
        self.discovery: DiscoveryClient | None = None
        self.config_changed = asyncio.Event()
        # Events by name (refusals, reasons, config pushes...). defaultdict, not Counter:
        # its increment costs half as much. The two counts every request makes are plain
        # attributes, a quarter of the cost again; `counter_values` shows them all.
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.requests = 0  # requests finished, either protocol
        self.requests_sync = 0  # HTTP/1.1 requests sent without a task (the fast path)
        self._local_apps: dict[tuple[int, bool], ClusterRuntime] = {}
        self.access_log: AccessLog | None = None
        # metrics, tracing, tap: told of every finished request and TCP connection
        self.request_observers: list[RequestObserver] = []
        self.connection_observers: list[ConnectionObserver] = []
        # Set (and among the request observers) when spans are exported: exchanges ask
        # it where they build the upstream head. None: tracing off, one check per request.
        self.tracer: Tracer | None = None
        self._svid: Svid | None = None  # this proxy's certificate, once fetched
        self.on_config: list[Any] = []  # callbacks after a config is accepted
        self._next_report = 0.0
        self.metrics: ProxyMetrics | None = None
        self.traffic: TrafficReporter | None = None
        if settings.record_metrics:
            self.metrics = metrics = ProxyMetrics(
                self.workload_labels,
                endpoint=self.clusters.endpoint,
                own_principal=self._own_principal,
                build_tag=__version__,
            )
            self.request_observers.append(metrics)
            self.connection_observers.append(metrics)
            self.on_config.append(lambda _active: metrics.config_changed())
            # what the controller's dashboard and `myc stat` see (it cannot scrape us)
            self.traffic = TrafficReporter(metrics)  # counted by the metrics observer

    def start_drain(self) -> None:
        """Drain now: connections close once idle, and no response keeps its connection."""
        self.draining = True
        self.drain.start()

    @property
    def svid(self) -> Svid | None:
        return self._svid

    @svid.setter
    def svid(self, svid: Svid | None) -> None:
        self._svid = svid
        if self.metrics is not None:
            self.metrics.config_changed()  # mTLS (and our principal) may start now

    def own_principal(self) -> str | None:
        """Our SPIFFE ID, once we hold an SVID."""
        return self._own_principal()

    def _own_principal(self) -> str | None:
        svid = self._svid
        return svid.identity.uri if svid is not None else None

    # --- tasks ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def sweep(self) -> None:
        """Once a second: enforce connection timeouts without a timer per request, and
        write out the access log."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)
            self.pools.close_idle(older_than=now - IDLE_TIMEOUT_SECONDS)
            self.mtls_pools.close_idle(older_than=now - MTLS_IDLE_TIMEOUT_SECONDS)
            self.h2_pools.close_idle(asyncio.get_running_loop().time())
            if self.access_log is not None:
                self.access_log.flush()
            if self.traffic is not None and now >= self._next_report:
                self._next_report = now + REPORT_SECONDS
                self.report_traffic()

    def report_traffic(self) -> None:
        """Send the controller what we forwarded since the last report (if anything)."""
        if self.traffic is None or self.discovery is None:
            return
        rows = self.traffic.take_rows()
        for start in range(0, len(rows), MAX_TRAFFIC_ROWS):  # within a report's bound
            self.discovery.send(TelemetryReport(rows=rows[start : start + MAX_TRAFFIC_ROWS]))

    # --- config -----------------------------------------------------------------------------

    def accept_config(self, snapshot: Snapshot, version: str) -> None:
        """The discovery client's acceptance hook: raising here NACKs the snapshot."""
        active = build_active_config(snapshot, version, self.rng, self.active)
        self.clusters.sync(active.clusters, active.endpoints)
        self.active = active
        self.counters["config_accepted"] += 1
        for callback in self.on_config:
            callback(active)
        self.config_changed.set()
        self.config_changed = asyncio.Event()

    async def resolve(self, host: str) -> None:
        """Subscribe to a service named for the first time and wait for its config."""
        if self.discovery is None:
            return
        name = host.lower()
        if name.count(":") == 1:
            name = name.rsplit(":", 1)[0]
        self.counters["on_demand_subscriptions"] += 1
        try:
            await self.discovery.subscribe(name, timeout=ON_DEMAND_WAIT_SECONDS)
        except TimeoutError:
            self.log.warning("no config for %r arrived within %ss", name, ON_DEMAND_WAIT_SECONDS)

    def cluster(self, config: ActiveConfig, name: str, port: int) -> ClusterRuntime:
        # Once per request: two lookups by a string and an int cost half of one by a
        # (name, port) tuple made and hashed anew each time.
        by_port = config.live_clusters.get(name)
        if by_port is None:
            by_port = config.live_clusters[name] = {}
        cluster = by_port.get(port)
        if cluster is None:
            settings = config.clusters[name]
            cluster = self.clusters.get(name, port, settings, config.endpoints.get(name))
            by_port[port] = cluster
        return cluster

    def speaks_mtls(self, cluster: ClusterRuntime, endpoint: EndpointState) -> bool:
        """mTLS to an endpoint that runs a proxy (the cluster says so and its own proxy
        registered it) once we hold an SVID; plaintext otherwise."""
        return self.svid is not None and cluster.settings.mtls and endpoint.mtls

    def pool_for(self, cluster: ClusterRuntime, endpoint: EndpointState) -> EndpointPool:
        if self.speaks_mtls(cluster, endpoint):
            return self.mtls_pools.get(endpoint.address, endpoint.port, endpoint.identity)
        return self.pools.get(endpoint.address, endpoint.port)

    def client_tls(self) -> ssl.SSLContext:
        """The client context for our current SVID."""
        return self._tls_context("client")

    def relay_client_tls(self) -> ssl.SSLContext:
        """A TCP relay's client context: it offers the ALPN that says an introduction
        comes first (identity/alpn.py)."""
        return self._tls_context("relay")

    def server_tls(self) -> ssl.SSLContext:
        """The serving context for our current SVID."""
        return self._tls_context("server")

    def _tls_context(self, side: Literal["client", "relay", "server"]) -> ssl.SSLContext:
        # Made once per SVID and side: building one loads the bundle and the key, far
        # too slow for every connection; a renewal or a new bundle is a new SVID.
        svid = self.svid
        assert svid is not None
        cached = self._tls_contexts.get(side)
        if cached is None or cached[0] is not svid:
            if side == "server":
                context = server_context(svid)
            else:
                context = client_context(svid, introduces=side == "relay")
            cached = self._tls_contexts[side] = (svid, context)
        return cached[1]

    def local_app(self, target_port: int, *, http2: bool = False) -> ClusterRuntime:
        """The local application on `target_port`, as a one-endpoint cluster (`http2`: it
        speaks HTTP/2 there, its port's protocol being HTTP2 or GRPC)."""
        key = (target_port, http2)
        cluster = self._local_apps.get(key)
        if cluster is None:
            name = f"inbound|{target_port}"
            settings = cfg.Cluster(
                name=name,
                service="local",
                balancer="ROUND_ROBIN",
                mtls=False,
                http2_ports=[target_port] if http2 else [],
            )
            endpoint = cfg.Endpoint(
                workload="local",
                address=self.settings.app_address,
                ports={str(target_port): target_port},
                identity="",
            )
            cluster = ClusterRuntime(settings, target_port, self.rng)
            cluster.update(settings, [endpoint])
            self._local_apps[key] = cluster
        return cluster

    # --- per connection (each request counts and reports itself: `ProxiedRequest.report`) ---

    def connection_opened(self, connection: OpenedConnection) -> None:
        for observer in self.connection_observers:
            observer.connection_opened(connection)

    def connection_finished(self, connection: FinishedConnection) -> None:
        for observer in self.connection_observers:
            observer.connection_finished(connection)

    def counter_values(self) -> dict[str, int]:
        """Every counter the proxy keeps, by name (what /stats and the metrics show)."""
        return {
            **self.counters,
            "requests": self.requests,
            "requests_sync": self.requests_sync,
        }

    def refused(self, reason: str, peer: str) -> None:
        self.counters[f"refused_{reason}"] += 1
        self.log.info("refused a request from %s: %s", peer, reason)

    # --- access log -------------------------------------------------------------------------

    def open_access_log(self, stream: TextIO) -> None:
        """Log every request (sampled as the settings say) and every TCP connection."""
        self.access_log = AccessLog(
            stream, sampling=self.settings.access_log_sampling, rng=self.rng
        )
        self.request_observers.append(self.access_log)
        self.connection_observers.append(self.access_log)
