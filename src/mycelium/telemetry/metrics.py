"""Istio's standard metrics, counted per finished request and TCP connection.

`ProxyMetrics` is a request and connection observer (see `telemetry/__init__`). It
records what Istio's proxies record, under Istio's names and labels, so that Grafana
dashboards and Kiali queries written for Istio work unchanged:

    istio_requests_total                   counter
    istio_request_duration_milliseconds    histogram (Envoy's default buckets, in ms)
    istio_request_bytes                    histogram (request body bytes)
    istio_response_bytes                   histogram (response bytes sent to the client)
    istio_tcp_connections_opened_total     counter
    istio_tcp_connections_closed_total     counter
    istio_tcp_sent_bytes_total             counter (to the client)
    istio_tcp_received_bytes_total         counter (from the client)
    istio_request_messages_total           counter (gRPC messages from the client)
    istio_response_messages_total          counter (gRPC messages to the client)
    istio_build                            gauge (1, with this build's tag)

with Istio's labels and values (`telemetry/workload_labels.py` for each end's).

Who reports: a sidecar's outbound side, a local port and a gateway report as `source`
(they know the destination from the endpoint they chose); a sidecar's inbound side
reports as `destination` (it knows the source from the peer's certificate and from the
introduction the calling proxy sends: `PEER_HEADER` over HTTP, a preamble over TCP).

The hot path only counts: each request costs a clock read, one dict look-up and a few
integer increments on plain lists. Label sets are worked out once per (service, cluster,
endpoint) or (service, peer) and kept, interned, in `_bases` until the config changes;
nothing is formatted until a scrape asks for the exposition (`render`). No locks: the
proxy is one event loop, and scrapes run on it too.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Protocol

from mycelium.discovery.protocol import LATENCY_BUCKETS_MS
from mycelium.telemetry import FinishedConnection, FinishedRequest, OpenedConnection
from mycelium.telemetry.response_flags import NO_FLAG, response_flags
from mycelium.telemetry.workload_labels import UNKNOWN, WorkloadLabels, parse_peer

# Envoy's default histogram buckets, which Istio's standard metrics use unchanged (for
# durations in milliseconds, and for byte sizes too).
DEFAULT_BUCKETS: tuple[float, ...] = LATENCY_BUCKETS_MS  # Istio's, shared with reports
# Kubernetes' cluster domain: `destination_service` is `<svc>.<ns>.svc.cluster.local`.
CLUSTER_DOMAIN = "svc.cluster.local"
# The text format's content type (Prometheus exposition format 0.0.4): the proxy's
# expositions and the controller's.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The peer metadata a calling proxy sends on the first request of each mTLS connection
# (Istio sends `x-envoy-peer-metadata` on every request; once per connection is enough,
# since a pooled connection between two proxies always has the same two ends).
PEER_HEADER = b"x-mycelium-peer"


PASSTHROUGH = "PassthroughCluster"  # Istio's destination_service_name for passthrough
# Endpoints remembered past their removal (`ProxyMetrics._endpoint_view`): a mesh's
# worth of pods, churned through a few times.
MAX_REMEMBERED_ENDPOINTS = 10_000


def service_labels(service: str, host: str = "") -> tuple[str, str, str]:
    """A caller's `destination_service`, `destination_service_name` and
    `destination_service_namespace` for a service key `<svc>.<ns>`; a passthrough is
    named by the Host it asked for, verbatim, as Istio's client side names it."""
    if service:
        name, _, namespace = service.rpartition(".")
        return f"{service}.{CLUSTER_DOMAIN}", name or service, namespace or UNKNOWN
    return (host or UNKNOWN), PASSTHROUGH, UNKNOWN


def served_service_labels(service: str, me: WorkloadLabels) -> tuple[str, str, str]:
    """The served side's: the service it serves, else its own canonical service; the
    namespace is always its own (Istio's server side)."""
    if service:
        name = service.rpartition(".")[0] or service
        return f"{service}.{CLUSTER_DOMAIN}", name, me.namespace
    return me.canonical_service, me.canonical_service, me.namespace


class EndpointView(Protocol):
    """What the metrics need from an upstream endpoint (`upstream/endpoint.py`)."""

    workload: str
    labels: dict[str, str]
    identity: str
    mtls: bool


# Istio's labels in the order its proxies write them. Every metric has the first
# twenty, `request_protocol`, `response_flags` and `connection_security_policy`; the
# request metrics add `response_code` and `grpc_response_status` (TCP's have neither).
WORKLOAD_LABELS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
)
REQUEST_LABELS = (
    *WORKLOAD_LABELS,
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS = (
    *WORKLOAD_LABELS,
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)


class LabelSet:
    """Both ends of a call and the service called, as labels (interned: equal sets are
    the same object, hashed by identity, so cheap as a key part)."""

    __slots__ = ("destination", "labels", "mtls", "reporter", "security", "service", "source")

    def __init__(
        self,
        reporter: str,
        source: WorkloadLabels,
        destination: WorkloadLabels,
        service: tuple[str, str, str],
        mtls: bool,
    ) -> None:
        self.reporter = reporter
        self.source = source
        self.destination = destination
        self.service = service  # destination_service, _name and _namespace
        self.mtls = mtls  # the hop was mutual TLS (the controller's reports count it)
        # connection_security_policy as Istio writes it: the served side says whether
        # the caller proved itself; the caller's side always says "unknown"
        if reporter == "source":
            self.security = UNKNOWN
        else:
            self.security = "mutual_tls" if mtls else "none"
        self.labels = _workload_values(reporter, source, destination, service)

    def key(self) -> tuple[object, ...]:
        return (*self.labels, self.mtls)


def _workload_values(
    reporter: str,
    src: WorkloadLabels,
    dst: WorkloadLabels,
    service: tuple[str, str, str],
) -> tuple[str, ...]:
    """The values of `WORKLOAD_LABELS`, in its order."""
    fqdn, service_name, service_namespace = service
    return (
        reporter,
        src.name,
        src.canonical_service,
        src.canonical_revision,
        src.namespace,
        src.principal,
        src.app,
        src.version,
        src.cluster,
        dst.name,
        dst.namespace,
        dst.principal,
        dst.app,
        dst.version,
        fqdn,
        dst.canonical_service,
        dst.canonical_revision,
        service_name,
        service_namespace,
        dst.cluster,
    )


class RequestSeries:
    """One series key's request counts, cumulative; histogram buckets are not (see
    render), and `request_bytes` leaves out the requests without a body (its bucket 0
    is `count` less the others). Keyed by (LabelSet, route, grpc, status, grpc status,
    flags): the route is not a metrics label, but the controller's traffic report
    counts by it."""

    __slots__ = (
        "count",
        "duration",
        "duration_sum",
        "last_sent",
        "last_sent_bucket",
        "request_bytes",
        "request_bytes_sum",
        "request_messages",
        "response_bytes",
        "response_bytes_sum",
        "response_messages",
    )

    def __init__(self) -> None:
        size = len(DEFAULT_BUCKETS) + 1  # the last: above every bound (+Inf only)
        self.count = 0
        self.duration = [0] * size
        self.duration_sum = 0.0
        self.request_bytes = [0] * size
        self.request_bytes_sum = 0
        self.response_bytes = [0] * size
        self.response_bytes_sum = 0
        self.request_messages = 0  # gRPC messages, both ways (gRPC series only)
        self.response_messages = 0
        # A route's responses often have one size: its bucket, found once.
        self.last_sent = 0
        self.last_sent_bucket = 0

    def add(self, other: RequestSeries) -> None:
        """Count `other` in too (series that render with the same labels)."""
        self.count += other.count
        self.duration_sum += other.duration_sum
        self.request_bytes_sum += other.request_bytes_sum
        self.response_bytes_sum += other.response_bytes_sum
        self.request_messages += other.request_messages
        self.response_messages += other.response_messages
        for mine, theirs in (
            (self.duration, other.duration),
            (self.request_bytes, other.request_bytes),
            (self.response_bytes, other.response_bytes),
        ):
            for i, n in enumerate(theirs):
                mine[i] += n
        # requests without a body are not counted one by one (see request_finished)
        self.request_bytes[0] += other.count - sum(other.request_bytes)


class _TcpSeries:
    __slots__ = ("closed", "opened", "received", "sent")

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.sent = 0
        self.received = 0

    def add(self, other: _TcpSeries) -> None:
        self.opened += other.opened
        self.closed += other.closed
        self.sent += other.sent
        self.received += other.received


class ProxyMetrics:
    """The standard metrics of one proxy. `me` is this proxy's own workload (its
    principal is filled in per connection, from `own_principal`); `endpoint`
    finds an upstream endpoint by cluster name and `address:port`; `own_principal`
    returns our SPIFFE ID once we hold a certificate (None before)."""

    def __init__(
        self,
        me: WorkloadLabels,
        *,
        endpoint: Callable[[str, str], EndpointView | None],
        own_principal: Callable[[], str | None],
        build_tag: str = "unknown",
    ) -> None:
        self._me = me
        self.build_tag = build_tag  # istio_build's tag: Mycelium's version
        self._endpoint = endpoint
        # Endpoints as last seen, for requests that end after a config change removed
        # theirs (a pod rolled out while they were in flight): they keep their labels
        # rather than start a series of unknowns. Cleared whole when it grows too large.
        self._seen: dict[tuple[str, str], EndpointView] = {}
        self._own_principal = own_principal
        self._principal_seen: str | None = None
        self._interned: dict[tuple[object, ...], LabelSet] = {}
        self._bases: dict[tuple[object, ...], LabelSet] = {}
        self.requests: dict[tuple[object, ...], RequestSeries] = {}
        # the record's own fields (its side, service, peer or upstream, route, status,
        # ...) to its series: reset with the label sets when the config changes
        self._index: dict[tuple[object, ...], RequestSeries] = {}
        self.tcp: dict[tuple[object, ...], _TcpSeries] = {}

    def config_changed(self) -> None:
        """Endpoints may have new workloads, versions or identities: work them out anew."""
        self._bases.clear()
        self._index.clear()

    # --- the hot path -------------------------------------------------------------------

    def request_finished(self, request: FinishedRequest) -> None:
        # The hot path, once per request: one tuple, one dict lookup, a few increments.
        # `_index` maps what the record says directly to its series, so the label set
        # is worked out only on a miss; the controller's traffic report is read from
        # the same series (traffic_report.py).
        duration = (request.ended - request.started) * 1000.0
        reason = request.reason
        status = request.status
        flags = response_flags(reason, status) if reason or not status else NO_FLAG
        side = request.side
        # The side's direction leads the key: the two shapes never meet.
        if side.reporter == "source":  # the caller's side: labelled by what it called
            fast: tuple[object, ...] = (
                side.direction,
                request.service,
                request.cluster_name,
                request.upstream_host,
                request.host,
                request.rule_name,
                request.grpc,
                status,
                request.grpc_status,
                flags,
            )
        else:  # the served side: labelled by who called
            fast = (
                side.direction,
                request.service,
                request.peer_principal,
                request.peer_metadata,
                request.rule_name,
                request.grpc,
                status,
                request.grpc_status,
                flags,
            )
        series = self._index.get(fast)
        if series is None:
            series = self._series_for(request, fast, flags)
        series.count += 1
        series.duration[bisect_left(DEFAULT_BUCKETS, duration)] += 1
        series.duration_sum += duration
        received = request.bytes_received
        if received:  # most requests have none: bucket 0 is worked out when rendered
            series.request_bytes[bisect_left(DEFAULT_BUCKETS, received)] += 1
            series.request_bytes_sum += received
        sent = request.bytes_sent
        if sent != series.last_sent:
            series.last_sent = sent
            series.last_sent_bucket = bisect_left(DEFAULT_BUCKETS, sent)
        series.response_bytes[series.last_sent_bucket] += 1
        series.response_bytes_sum += sent
        if request.grpc:
            messages_in, messages_out = request.grpc_messages
            series.request_messages += messages_in
            series.response_messages += messages_out

    def _series_for(
        self, request: FinishedRequest, fast: tuple[object, ...], flags: str
    ) -> RequestSeries:
        key = (
            self._base_for(request),
            request.rule_name,
            request.grpc,
            request.status,
            request.grpc_status,
            flags,
        )
        series = self.requests.get(key)
        if series is None:
            series = self.requests[key] = RequestSeries()
        self._index[fast] = series
        return series

    def _base_for(self, request: FinishedRequest) -> LabelSet:
        """The request's label set up to `connection_security_policy` (interned: equal
        sets are the same object)."""
        side = request.side
        if side.reporter == "destination":
            peer = request.peer_metadata
            principal = request.peer_principal
            bkey: tuple[object, ...] = (request.service, principal, peer)
            base = self._bases.get(bkey)
            if base is None:
                base = self._inbound_base(bkey, request.service, principal, peer)
            return base
        service = request.service
        if side.callee_from_cluster:
            service = request.cluster_name.partition("/")[0]
        cluster, upstream, host = request.cluster_name, request.upstream_host, request.host
        bkey = (service, cluster, upstream, host)
        base = self._bases.get(bkey)
        if base is None:
            base = self._outbound_base(bkey, service, cluster, upstream, host)
        return base

    def connection_opened(self, connection: OpenedConnection) -> None:
        """Counted at once: a long-lived connection shows while it lasts (flag "-",
        as Envoy reports an open connection)."""
        key = (self._tcp_base(connection), "-")
        series = self.tcp.get(key)
        if series is None:
            series = self.tcp[key] = _TcpSeries()
        series.opened += 1

    def connection_finished(self, connection: FinishedConnection) -> None:
        flags = response_flags(connection.ended_by, 0)
        key = (self._tcp_base(connection), flags)
        series = self.tcp.get(key)
        if series is None:
            series = self.tcp[key] = _TcpSeries()
        series.closed += 1
        series.sent += connection.bytes_sent
        series.received += connection.bytes_received

    # --- label sets, once per (service, peer) or (service, endpoint) --------------------

    def _tcp_base(self, connection: OpenedConnection | FinishedConnection) -> LabelSet:
        if connection.direction == "inbound":
            peer = connection.peer_principal
            metadata = connection.peer_metadata
            bkey: tuple[object, ...] = ("tcp", connection.service, peer, metadata)
            return self._bases.get(bkey) or self._inbound_base(
                bkey, connection.service, peer, metadata
            )
        bkey = ("tcp", connection.service, connection.cluster, connection.upstream_host, "")
        return self._bases.get(bkey) or self._outbound_base(
            bkey,
            connection.service,
            connection.cluster,
            connection.upstream_host,
            "",
            tls=connection.mtls_upstream,
        )

    def _endpoint_view(self, cluster: str, upstream: str) -> EndpointView | None:
        """The endpoint a request went to: as configured now, else as last seen."""
        key = (cluster, upstream)
        found = self._endpoint(cluster, upstream)
        if found is None:
            return self._seen.get(key)
        if len(self._seen) >= MAX_REMEMBERED_ENDPOINTS:
            self._seen.clear()
        self._seen[key] = found
        return found

    def _intern(self, bkey: tuple[object, ...], candidate: LabelSet) -> LabelSet:
        key = candidate.key()
        base = self._interned.get(key)
        if base is None:
            base = self._interned[key] = candidate
        self._bases[bkey] = base
        return base

    def _inbound_base(
        self, bkey: tuple[object, ...], service: str, principal: str | None, peer: bytes | None
    ) -> LabelSet:
        if peer is not None and principal:
            source = parse_peer(peer, principal)
        else:
            source = WorkloadLabels.from_principal(principal)
        own = self._own_principal() if principal else None
        me = self._me.with_principal(own or UNKNOWN)
        served = served_service_labels(service, me)
        return self._intern(bkey, LabelSet("destination", source, me, served, bool(principal)))

    def _outbound_base(
        self,
        bkey: tuple[object, ...],
        service: str,
        cluster: str,
        upstream: str,
        host: str,
        *,
        tls: bool | None = None,
    ) -> LabelSet:
        endpoint = self._endpoint_view(cluster, upstream) if cluster and upstream else None
        own = self._own_principal()
        if tls is None:
            tls = endpoint is not None and endpoint.mtls and own is not None
        labels = service_labels(service, host)
        if endpoint is not None:
            namespace, _, registered = endpoint.workload.partition("/")
            principal = endpoint.identity if tls and endpoint.identity else UNKNOWN
            destination = WorkloadLabels.of(
                registered,
                namespace,
                endpoint.labels,
                cluster=self._me.cluster,
                principal=principal,
            )
        else:
            destination = WorkloadLabels(namespace=labels[2])
        me = self._me.with_principal(own if tls and own else UNKNOWN)
        return self._intern(bkey, LabelSet("source", me, destination, labels, tls))

    # --- the exposition, when scraped ---------------------------------------------------

    def render(self) -> str:
        """Prometheus text format 0.0.4 of every series."""
        out: list[str] = []
        requests = _merge_requests(self.requests)
        header(out, "istio_requests_total", "counter", "Requests, by source and destination.")
        for labels, series in requests:
            out.append(f"istio_requests_total{{{labels}}} {series.count}")
        for name, unit, attr in (
            ("istio_request_duration_milliseconds", "Request duration (ms).", "duration"),
            ("istio_request_bytes", "Request body sizes (bytes).", "request_bytes"),
            ("istio_response_bytes", "Response sizes (bytes).", "response_bytes"),
        ):
            header(out, name, "histogram", unit)
            for labels, series in requests:
                _histogram(
                    out,
                    name,
                    labels,
                    buckets=getattr(series, attr),
                    total=getattr(series, f"{attr}_sum"),
                    count=series.count,
                )
        # gRPC's message counters carry the workload labels only, as Istio's do
        messages = _merge_messages(self.requests)
        for name, attr, text in (
            ("istio_request_messages_total", "request_messages", "gRPC messages from clients."),
            ("istio_response_messages_total", "response_messages", "gRPC messages to clients."),
        ):
            header(out, name, "counter", text)
            for labels, counts in messages:
                out.append(f"{name}{{{labels}}} {getattr(counts, attr)}")
        tcp = _merge_tcp(self.tcp)
        for name, attr, text in (
            ("istio_tcp_connections_opened_total", "opened", "TCP connections opened."),
            ("istio_tcp_connections_closed_total", "closed", "TCP connections closed."),
            ("istio_tcp_sent_bytes_total", "sent", "Bytes sent to the client over TCP."),
            ("istio_tcp_received_bytes_total", "received", "Bytes received from the client."),
        ):
            header(out, name, "counter", text)
            for labels, tcp_series in tcp:
                out.append(f"{name}{{{labels}}} {getattr(tcp_series, attr)}")
        header(out, "istio_build", "gauge", "The proxy's build (Istio's component and tag).")
        out.append(f'istio_build{{component="proxy",tag="{escape(self.build_tag)}"}} 1')
        return "\n".join(out) + "\n"


def _merge_messages(
    series: dict[tuple[object, ...], RequestSeries],
) -> list[tuple[str, RequestSeries]]:
    """The gRPC series, merged by their workload labels alone."""
    merged: dict[str, RequestSeries] = {}
    for (base, _route, grpc, _status, _grpc_status, _flags), one in list(series.items()):
        if not grpc:
            continue
        assert isinstance(base, LabelSet)
        text = label_text(WORKLOAD_LABELS, base.labels)
        if text not in merged:
            merged[text] = RequestSeries()
        merged[text].add(one)
    return sorted(merged.items())


def _merge_requests(
    series: dict[tuple[object, ...], RequestSeries],
) -> list[tuple[str, RequestSeries]]:
    """Series keyed by label text: keys that differ only in how they were found, or by
    route, merge."""
    merged: dict[str, RequestSeries] = {}
    for (base, _route, grpc, status, grpc_status, flags), one in list(series.items()):
        assert isinstance(base, LabelSet)
        values = (
            *base.labels,
            "grpc" if grpc else "http",
            str(status),
            str(grpc_status) if grpc else "",
            str(flags),
            base.security,
        )
        text = label_text(REQUEST_LABELS, values)
        if text not in merged:
            merged[text] = RequestSeries()
        merged[text].add(one)
    return sorted(merged.items())


def _merge_tcp(series: dict[tuple[object, ...], _TcpSeries]) -> list[tuple[str, _TcpSeries]]:
    merged: dict[str, _TcpSeries] = {}
    for (base, flags), one in list(series.items()):
        assert isinstance(base, LabelSet)
        text = label_text(TCP_LABELS, (*base.labels, "tcp", str(flags), base.security))
        if text not in merged:
            merged[text] = _TcpSeries()
        merged[text].add(one)
    return sorted(merged.items())


def header(out: list[str], name: str, kind: str, text: str) -> None:
    """A metric family's HELP and TYPE lines."""
    out.append(f"# HELP {name} {text}")
    out.append(f"# TYPE {name} {kind}")


def _histogram(
    out: list[str], name: str, labels: str, *, buckets: list[int], total: float, count: int
) -> None:
    running = 0
    for bound, n in zip(DEFAULT_BUCKETS, buckets, strict=False):
        running += n
        out.append(f'{name}_bucket{{{labels},le="{_number(bound)}"}} {running}')
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    out.append(f"{name}_sum{{{labels}}} {_number(total)}")
    out.append(f"{name}_count{{{labels}}} {count}")


def _number(value: float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote, newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))
