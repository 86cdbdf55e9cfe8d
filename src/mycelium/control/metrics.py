"""The controller's own metrics, served in Prometheus' text format at `/metrics` on 15014.

Two sources. Histograms are observed as things happen: a push's time to its ACK (the
discovery server), every store call (`store.TimedStore`), every bundle compile. All the
rest is read at scrape time from what the controller already keeps — its sessions,
push/ACK/NACK counts, stream and REST port refusals, SVIDs, telemetry reports, taps — by
`_ControllerCollector`, so nothing is counted twice and nothing runs per event.

Each controller has its own `CollectorRegistry`: tests run several controllers in one
process, and prometheus_client's global default registry would mix them up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol, get_args, get_type_hints

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mycelium.control.discovery_server import DiscoveryServer
from mycelium.control.refusals import RefusalLog
from mycelium.control.state import MeshState
from mycelium.control.svids import SvidService
from mycelium.discovery.protocol import NodeInfo
from mycelium.telemetry.metrics import CONTENT_TYPE

__all__ = ["CONTENT_TYPE", "ControllerMetrics"]


def _one_two_five(first: float, count: int) -> tuple[float, ...]:
    """`count` bucket bounds from `first` up, in steps of 1, 2.5, 5 per decade."""
    return tuple(round(first * 10 ** (i // 3) * (1.0, 2.5, 5.0)[i % 3], 12) for i in range(count))


# Push to ACK, in seconds (1 ms .. 10 s): a proxy on the same host applies a config in a
# few ms; tens of ms over a network or under load; seconds mean a stuck proxy or a
# huge config.
PUSH_LATENCY_BUCKETS = _one_two_five(0.001, 13)
# Store calls, in seconds (100 µs .. 5 s): the embedded SQLite store answers in tens of
# µs to a ms (a write waits for its fsync); etcd in a few ms; past a second the store is
# in trouble.
STORE_BUCKETS = _one_two_five(0.0001, 15)
# Compiling one bundle (a service's outbound config, a proxy's inbound): µs for a small
# mesh, ms for a service with hundreds of endpoints and routes.
COMPILE_BUCKETS = STORE_BUCKETS

SYNC_STATES = ("synced", "pending", "nack")  # ProxySession.state
# every role is exported, 0 when none is connected, so a graph has no gaps
ROLES: tuple[str, ...] = get_args(get_type_hints(NodeInfo)["role"])


class ControllerReadings(Protocol):
    """What a scrape reads from the controller. The controller attaches itself; naming
    only this keeps the metrics from importing the controller, which owns them."""

    @property
    def discovery(self) -> DiscoveryServer: ...

    @property
    def svids(self) -> SvidService: ...

    @property
    def state(self) -> MeshState: ...

    @property
    def stream_refusals(self) -> Mapping[str, int]: ...  # by reason

    @property
    def streams_proven(self) -> Mapping[str, int]: ...  # by what proved the identity

    @property
    def api_refusals(self) -> RefusalLog: ...


class ControllerMetrics:
    """One controller's registry and the histograms observed as events happen. It is
    the discovery server's `DiscoveryObserver` and the store's `StoreObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._push_latency = Histogram(
            "mycelium_controller_push_latency_seconds",
            "Seconds from sending a config push to the proxy's ACK.",
            buckets=PUSH_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._store_seconds = Histogram(
            "mycelium_controller_store_operation_seconds",
            "Seconds per store call, failed or not, by operation.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self._store_errors = Counter(
            "mycelium_controller_store_errors",
            "Store calls that raised, by operation and error class.",
            ["operation", "error"],
            registry=self.registry,
        )
        self._compile_seconds = Histogram(
            "mycelium_controller_config_compile_seconds",
            "Seconds to compile one config bundle, by bundle kind.",
            ["bundle"],
            buckets=COMPILE_BUCKETS,
            registry=self.registry,
        )
        self._collector: Collector | None = None

    def attach(self, controller: ControllerReadings) -> None:
        """Read `controller`'s counts and sessions at every scrape (once it started)."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = _ControllerCollector(controller)
        self.registry.register(self._collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- observers ----------------------------------------------------------------------

    def push_answered(self, seconds: float) -> None:
        self._push_latency.observe(seconds)

    def compiled(self, bundle_kind: str, seconds: float) -> None:
        self._compile_seconds.labels(bundle_kind).observe(seconds)

    def store_call(self, operation: str, seconds: float) -> None:
        self._store_seconds.labels(operation).observe(seconds)

    def store_error(self, operation: str, error: str) -> None:
        self._store_errors.labels(operation, error).inc()


class _ControllerCollector(Collector):
    """What the controller already keeps, read when scraped."""

    def __init__(self, controller: ControllerReadings) -> None:
        self._c = controller

    def collect(self) -> Iterator[Metric]:
        c = self._c
        discovery = c.discovery
        sessions = list(discovery.sessions.values())

        connected = GaugeMetricFamily(
            "mycelium_controller_connected_proxies",
            "Proxies with an open discovery stream, by role.",
            labels=["role"],
        )
        for role in ROLES:
            connected.add_metric([role], sum(1 for s in sessions if s.node.role == role))
        yield connected

        by_state = GaugeMetricFamily(
            "mycelium_controller_proxies_by_sync_state",
            "Connected proxies by config state: synced (ACKed the latest), pending "
            "(a push unanswered or due), nack (rejected the latest).",
            labels=["state"],
        )
        for state in SYNC_STATES:
            by_state.add_metric([state], sum(1 for s in sessions if s.state == state))
        yield by_state

        for name, text, value in (
            ("pushes", "Config pushes sent to proxies.", discovery.pushes),
            ("acks", "Config pushes proxies accepted (ACK).", discovery.acks),
            ("nacks", "Config pushes proxies rejected (NACK).", discovery.nacks),
            (
                "telemetry_reports",
                "Traffic reports received from proxies (what stat, top and the dashboard show).",
                discovery.telemetry_reports,
            ),
            ("svids_issued", "Workload certificates signed, renewals included.", c.svids.issued),
            ("svids_renewed", "Workload certificates signed as renewals.", c.svids.renewed),
        ):
            yield CounterMetricFamily(f"mycelium_controller_{name}", text, value=value)

        yield _by_label(
            "mycelium_controller_svid_requests_refused",
            "Certificate requests refused, by reason.",
            "reason",
            c.svids.refused,
        )
        yield _by_label(
            "mycelium_controller_discovery_streams_refused",
            "Discovery streams refused at authentication, by reason.",
            "reason",
            c.stream_refusals,
        )
        yield _by_label(
            "mycelium_controller_discovery_refusals",
            "Connections and messages the discovery port refused (over a limit, too slow, "
            "malformed, not the sender's to send), by reason.",
            "reason",
            discovery.refusals.counts,
        )
        yield _by_label(
            "mycelium_controller_traffic_rows_refused",
            "Rows of proxies' traffic reports not counted: not about the reporter "
            "(not_reporter), or over the traffic store's series limits (series_limit).",
            "reason",
            discovery.traffic_rows_refused,
        )
        yield GaugeMetricFamily(
            "mycelium_controller_unauthenticated_connections",
            "Discovery connections open that have not proven who they are yet.",
            value=discovery.unauthenticated_connections,
        )
        yield GaugeMetricFamily(
            "mycelium_controller_traffic_series",
            "Distinct traffic edges (source, destination, route...) the controller keeps.",
            value=discovery.traffic.live_series,
        )
        yield _by_label(
            "mycelium_controller_api_refusals",
            "REST port connections and requests refused by its guard, by reason.",
            "reason",
            c.api_refusals.counts,
        )
        yield _by_label(
            "mycelium_controller_discovery_streams_accepted",
            "Discovery streams let in, by what proved the proxy's identity.",
            "proven_by",
            c.streams_proven,
        )
        yield GaugeMetricFamily(
            "mycelium_controller_taps_active", "Taps streaming now.", value=len(discovery.taps)
        )
        yield GaugeMetricFamily(
            "mycelium_controller_config_revision",
            "The store revision the controller's mirror of the config is at.",
            value=c.state.revision,
        )


def _by_label(name: str, text: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
