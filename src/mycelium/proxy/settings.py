"""The proxy process's own settings: where it listens and how it finds its controller.

Parsed once at start (from the `myc proxy` or `myc gateway` command line) into a frozen
object. What the proxy does with traffic is not here: that comes from the controller, as
config entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from mycelium import ports
from mycelium.discovery.client import ControllerAddress
from mycelium.discovery.protocol import NodeInfo
from mycelium.telemetry.tracing import DEFAULT_SAMPLING
from mycelium.telemetry.workload_labels import DEFAULT_CLUSTER

# How long a request waits for the config of a service it names for the first time.
ON_DEMAND_WAIT_SECONDS = 2.0
# Graceful drain: how long in-flight requests get to finish after SIGTERM.
DEFAULT_DRAIN_SECONDS = 10.0
# SO_MARK on the proxy's own upstream sockets in transparent mode, which the pod's
# nftables rules exempt from redirection (1337, as Istio uses for its proxy's uid).
DEFAULT_SOCKET_MARK = 0x539


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_host: str = "127.0.0.1") -> ListenAddress:
        host, sep, port = text.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"listen address {text!r} must look like [HOST:]PORT")
        return cls(host.strip("[]") if sep and host else default_host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def reachable(self) -> str | None:
        """`host:port` another machine's client can dial, None for a wildcard bind."""
        if self.host in ("0.0.0.0", "::", ""):
            return None
        return f"[{self.host}]:{self.port}" if ":" in self.host else str(self)


@dataclass(frozen=True, slots=True)
class LocalUpstream:
    """Explicit mode for apps that cannot use HTTP_PROXY: a local port per service."""

    listen: ListenAddress
    service: str  # a service reference: name, name.ns, FQDN or VIP
    port: int | None = None  # the service port to use; None: the service's first port


@dataclass(frozen=True, slots=True)
class ProxySettings:
    node: NodeInfo
    controllers: list[ControllerAddress]
    trust_bundle: Path | None
    state_dir: Path | None = None
    mode: Literal["explicit", "transparent"] = "explicit"
    outbound: ListenAddress | None = ListenAddress("127.0.0.1", ports.OUTBOUND)
    # transparent mode: one inbound listener, original destination from the kernel
    inbound: ListenAddress | None = None
    # explicit mode: inbound listeners on this address, one per inbound service port
    inbound_address: str | None = None
    app_address: str = "127.0.0.1"  # where the local app listens
    # gateway role: every port of the compiled gateway listeners, on this address
    gateway_address: str | None = None
    admin: ListenAddress | None = ListenAddress("127.0.0.1", ports.ADMIN)
    health: ListenAddress | None = ListenAddress("127.0.0.1", ports.HEALTH)
    # Prometheus exposition (`/stats/prometheus`, `/metrics`), Istio's port
    metrics: ListenAddress | None = ListenAddress("127.0.0.1", ports.METRICS)
    # Istio's standard request and TCP metrics; off only to measure what they cost
    record_metrics: bool = True
    # the mesh's name for where this proxy runs: `source_cluster` and
    # `destination_cluster` in the metrics (Istio's CLUSTER_ID, default `Kubernetes`)
    cluster: str = DEFAULT_CLUSTER
    local_upstreams: list[LocalUpstream] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    access_log: str | None = None  # a file path, or "-" for standard output
    # Tracing (docs/tracing.md): spans go to this OTLP/HTTP collector, http://HOST:PORT;
    # None: no spans, and trace headers pass through untouched.
    trace_collector: str | None = None
    # The share of requests without a sampling decision that start a trace here (a
    # sampled parent is always continued, an unsampled one never).
    trace_sampling: float = DEFAULT_SAMPLING
    # the share of requests and TCP connections logged; errors are always logged
    access_log_sampling: float = 1.0
    socket_mark: int = DEFAULT_SOCKET_MARK  # transparent mode only; needs CAP_NET_ADMIN
    # Register the workload only on admin POST /join (the runtime does once the app is
    # ready), not as soon as the discovery stream is up.
    wait_for_join: bool = False

    def to_json(self) -> bytes:
        """For handing the settings to a fresh process (see `mycelium.proxy.__main__`)."""
        return msgspec.json.encode(self, enc_hook=str)

    @classmethod
    def from_json(cls, data: bytes | str) -> ProxySettings:
        return msgspec.json.decode(data, type=cls, dec_hook=_decode_path)


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"cannot decode {kind}")
