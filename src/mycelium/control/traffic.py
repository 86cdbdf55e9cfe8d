"""The controller's memory of recent traffic, from the proxies' telemetry reports.

Proxies in netns pods cannot be scraped from the host, so each proxy sends the
controller, every few seconds over its discovery stream, what it forwarded since its
last report: one `TrafficRow` per (source workload, destination service, destination
workload, route, protocol, mTLS) with request and error counts and a latency histogram
(Istio's millisecond buckets). `TrafficStore` keeps them in slots of `SLOT_SECONDS`
for `KEEP_SECONDS` and answers what the dashboard, `myc stat` and `myc top` ask: edges
of the service graph and per-service or per-route golden metrics over a window, and a
service's time series. Sans-IO: the caller passes the time.

Reports come from proxies, and a proxy may be compromised, so the store believes a row
only where it describes its reporter (`describes_reporter`): its own workload as the
caller, or as the one called. And what it keeps is bounded, as a Prometheus server
must bound its series: at most `MAX_SERIES` distinct edges are alive at once (an edge
dies with the last slot that counts it), at most `MAX_SERIES_PER_REPORTER` of them
brought by one proxy; a row for a new edge beyond either is refused and counted (the
label explosion Istio's users meet when a label takes unbounded values).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from mycelium.discovery.protocol import LATENCY_BUCKETS_MS, NodeInfo, TrafficRow
from mycelium.telemetry.workload_labels import workload_name

SLOT_SECONDS = 5.0
KEEP_SECONDS = 600.0
MIN_WINDOW_SECONDS = 5.0  # one slot
# Distinct edges alive at once. An edge costs some 350 bytes in each of the 120 slots
# it may be counted in, so the store stays under 100 MB however the rows are forged;
# a mesh of a few hundred services has a few hundred edges.
MAX_SERIES = 2000
# Edges one proxy may bring: a caller of a few dozen services, with routes and
# replicas, has a few dozen; a gateway a few hundred.
MAX_SERIES_PER_REPORTER = 500


def describes_reporter(row: TrafficRow, reporter: NodeInfo) -> bool:
    """Whether `row` is about traffic `reporter` took part in: it names the reporter's
    own workload as the caller (outbound, and a gateway forwarding) or as the one
    called (inbound). A proxy cannot vouch for traffic between others."""
    me = (workload_name(reporter.workload or reporter.id, reporter.labels), reporter.namespace)
    return me in (
        (row.source_workload, row.source_workload_namespace),
        (row.destination_workload, row.destination_workload_namespace),
    )


def window_seconds(text: str) -> float:
    """A window the caller asked for, in seconds, held within what is kept; raises
    ValueError when `text` is no number."""
    return min(max(float(text), MIN_WINDOW_SECONDS), KEEP_SECONDS)


# What a row is counted under: everything but the counts.
type EdgeKey = tuple[str, str, str, str, str, str, str, bool]


def _key(row: TrafficRow) -> EdgeKey:
    return (
        row.source_workload,
        row.source_workload_namespace,
        row.destination_service,
        row.destination_workload,
        row.destination_workload_namespace,
        row.route,
        row.protocol,
        row.mtls,
    )


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    mtls_requests: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def add(self, requests: int, errors: int, mtls: bool, buckets: Iterable[int]) -> None:
        self.requests += requests
        self.errors += errors
        if mtls:
            self.mtls_requests += requests
        for index, count in enumerate(buckets):
            if index < len(self.buckets):
                self.buckets[index] += count

    def merge(self, other: Totals) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.mtls_requests += other.mtls_requests
        for index, count in enumerate(other.buckets):
            self.buckets[index] += count

    def summary(self, seconds: float) -> dict[str, float | int | None]:
        """Requests per second, success rate, p50/p95/p99 (ms) and mTLS share."""
        return {
            "requests": self.requests,
            "rps": round(self.requests / seconds, 3) if seconds > 0 else 0.0,
            "successRate": round(1 - self.errors / self.requests, 4) if self.requests else None,
            "p50": percentile(self.buckets, 0.50),
            "p95": percentile(self.buckets, 0.95),
            "p99": percentile(self.buckets, 0.99),
            "mtls": round(self.mtls_requests / self.requests, 4) if self.requests else None,
        }


def percentile(buckets: list[int], quantile: float) -> float | None:
    """The latency under which `quantile` of the requests fell, interpolated linearly
    inside the bucket it lands in (as Prometheus' histogram_quantile does)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(buckets):
        upper = LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else lower
        if count and seen + count >= rank:
            if index == len(LATENCY_BUCKETS_MS):
                return lower  # beyond the last bound: say the bound
            return round(lower + (upper - lower) * (rank - seen) / count, 3)
        seen += count
        lower = upper
    return lower


@dataclass(slots=True)
class _Slot:
    start: float
    edges: dict[EdgeKey, Totals] = field(default_factory=dict)


@dataclass(slots=True)
class _Series:
    reporter: str  # the proxy that brought the edge in
    slots: int = 0  # how many kept slots count it


class TrafficStore:
    def __init__(
        self,
        slot_seconds: float = SLOT_SECONDS,
        keep_seconds: float = KEEP_SECONDS,
        *,
        max_series: int = MAX_SERIES,
        max_series_per_reporter: int = MAX_SERIES_PER_REPORTER,
    ) -> None:
        self.slot_seconds = slot_seconds
        self._keep_slots = max(1, int(keep_seconds / slot_seconds))
        self._slots: deque[_Slot] = deque()
        self._max_series = max_series
        self._max_per_reporter = max_series_per_reporter
        self._series: dict[EdgeKey, _Series] = {}
        self._reporters: dict[str, int] = defaultdict(int)  # proxy id -> its live edges

    @property
    def live_series(self) -> int:
        """Distinct edges alive."""
        return len(self._series)

    def add(self, now: float, rows: Iterable[TrafficRow], reporter: str = "") -> int:
        """Count `rows` from the proxy `reporter` in the slot of `now`; returns how many
        were refused because their edge would go over a series limit."""
        slot = self._slot(now)
        refused = 0
        for row in rows:
            key = _key(row)
            totals = slot.edges.get(key)
            if totals is None:
                series = self._series.get(key)
                if series is None:
                    if (
                        len(self._series) >= self._max_series
                        or self._reporters[reporter] >= self._max_per_reporter
                    ):
                        refused += 1
                        continue
                    series = self._series[key] = _Series(reporter)
                    self._reporters[reporter] += 1
                series.slots += 1
                totals = slot.edges[key] = Totals()
            totals.add(row.requests, row.errors, row.mtls, row.latency_buckets)
        return refused

    def _slot(self, now: float) -> _Slot:
        start = now - now % self.slot_seconds
        if not self._slots or self._slots[-1].start < start:
            self._slots.append(_Slot(start))
            while len(self._slots) > self._keep_slots:
                self._forget(self._slots.popleft())
        return self._slots[-1]

    def _forget(self, slot: _Slot) -> None:
        for key in slot.edges:
            series = self._series[key]
            series.slots -= 1
            if series.slots == 0:
                del self._series[key]
                self._reporters[series.reporter] -= 1
                if not self._reporters[series.reporter]:
                    del self._reporters[series.reporter]

    def _window(self, now: float, seconds: float) -> list[_Slot]:
        return [s for s in self._slots if s.start > now - seconds - self.slot_seconds]

    def edges(self, now: float, seconds: float) -> dict[EdgeKey, Totals]:
        merged: dict[EdgeKey, Totals] = defaultdict(Totals)
        for slot in self._window(now, seconds):
            for key, totals in slot.edges.items():
                merged[key].merge(totals)
        return dict(merged)

    def grouped(
        self, now: float, seconds: float, by: str, namespace: str | None = None
    ) -> dict[str, Totals]:
        """Totals per destination service (`by="service"`), per route
        (`"route"`: service and rule), or per source workload (`"workload"`); with
        `namespace`, only the services (or source workloads) of that namespace."""
        grouped: dict[str, Totals] = defaultdict(Totals)
        for key, totals in self.edges(now, seconds).items():
            source, source_ns, service, _, destination_ns, route, _, _ = key
            if namespace is not None and namespace != (
                source_ns if by == "workload" else destination_ns
            ):
                continue
            if by == "route":
                name = f"{service} {route or 'default'}"
            elif by == "workload":
                name = f"{source_ns}/{source}"
            else:
                name = service
            grouped[name].merge(totals)
        return dict(grouped)

    def series(
        self, now: float, seconds: float, service: str
    ) -> list[dict[str, float | int | None]]:
        """One point per slot: the service's golden metrics in that slot."""
        points = []
        for slot in self._window(now, seconds):
            totals = Totals()
            for key, edge in slot.edges.items():
                if key[2] == service:
                    totals.merge(edge)
            points.append({"t": slot.start, **totals.summary(self.slot_seconds)})
        return points
