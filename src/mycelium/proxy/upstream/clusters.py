"""Live clusters: the pushed cluster settings and endpoints, plus the state that must
outlive a config change — endpoint latency estimates, ejections, breaker counters, the
retry budget.

A cluster is kept per (cluster name, service port), since the port decides each
endpoint's target port. `ClusterSet.sync` applies a new config: settings are replaced,
endpoints that stayed keep their `EndpointState`, new ones start fresh, gone ones go.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from mycelium.discovery import config as cfg
from mycelium.proxy.upstream.balancers import Balancer, build_balancer
from mycelium.proxy.upstream.circuit import CircuitBreaker
from mycelium.proxy.upstream.endpoint import EndpointState
from mycelium.proxy.upstream.outlier import OutlierDetector
from mycelium.proxy.upstream.retry_budget import RetryBudget


class ClusterRuntime:
    def __init__(self, settings: cfg.Cluster, port: int, rng: random.Random) -> None:
        self.port = port
        self.rng = rng
        self.endpoints: list[EndpointState] = []
        self._by_key: dict[str, EndpointState] = {}
        self.settings = settings
        self.balancer: Balancer = build_balancer(settings.balancer, rng)
        self.outlier = self._outlier(settings)
        pool = settings.connection_pool
        self.breaker = CircuitBreaker(
            pool.max_connections, pool.max_pending_requests, pool.max_requests_in_flight
        )
        budget = settings.retry_budget
        self.retry_budget = RetryBudget(budget.ratio, budget.min_retries_per_second, budget.ttl)
        # Which protocol its endpoints are reached with on this port (the port's).
        self.http2 = port in settings.http2_ports

    @staticmethod
    def _outlier(settings: cfg.Cluster) -> OutlierDetector:
        # Without outlier detection a disabled detector still filters the unhealthy and
        # caches the result, which keeps the balancer on its fast path.
        od = settings.outlier_detection
        if od is None:
            return OutlierDetector.disabled()
        return OutlierDetector(
            consecutive_5xx=od.consecutive_5xx,
            consecutive_gateway_errors=od.consecutive_gateway_errors,
            base_ejection_time=od.base_ejection_time,
            max_ejection_percent=od.max_ejection_percent,
            interval=od.interval,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    def update(self, settings: cfg.Cluster, endpoints: Iterable[cfg.Endpoint]) -> None:
        if settings != self.settings:
            if settings.balancer != self.settings.balancer:
                self.balancer = build_balancer(settings.balancer, self.rng)
            if settings.outlier_detection != self.settings.outlier_detection:
                self.outlier = self._outlier(settings)
                self.outlier.update_membership(self.endpoints)
            pool = settings.connection_pool
            if pool != self.settings.connection_pool:
                self.breaker = CircuitBreaker(
                    pool.max_connections, pool.max_pending_requests, pool.max_requests_in_flight
                )
            if settings.retry_budget != self.settings.retry_budget:
                b = settings.retry_budget
                self.retry_budget = RetryBudget(b.ratio, b.min_retries_per_second, b.ttl)
            self.http2 = self.port in settings.http2_ports
            self.settings = settings
        fresh: dict[str, EndpointState] = {}
        for ep in endpoints:
            target = ep.ports.get(str(self.port))
            if target is None:
                continue  # this workload does not serve the port
            key = f"{ep.address}:{target}"
            mtls = ep.mtls and self.port not in ep.plaintext_ports
            state = self._by_key.get(key)
            if state is None:
                state = EndpointState(
                    key=key,
                    address=ep.address,
                    port=target,
                    weight=ep.weight,
                    labels=dict(ep.labels),
                    identity=ep.identity,
                    healthy=ep.healthy,
                    mtls=mtls,
                    workload=ep.workload,
                )
            else:
                state.weight, state.healthy = ep.weight, ep.healthy
                state.mtls = mtls
                state.workload = ep.workload
            fresh[key] = state
        self._by_key = fresh
        self.endpoints = list(fresh.values())
        self.outlier.update_membership(self.endpoints)

    def endpoint(self, key: str) -> EndpointState | None:
        return self._by_key.get(key)

    def pick(self, now: float, hash_key: bytes | None = None) -> EndpointState | None:
        """An endpoint for the next request: healthy, not ejected, chosen by the balancer."""
        candidates = self.outlier.available(self.endpoints, now)
        return self.balancer.pick(candidates, now=now, hash_key=hash_key)


class ClusterSet:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._clusters: dict[tuple[str, int], ClusterRuntime] = {}

    def get(
        self, name: str, port: int, settings: cfg.Cluster, endpoints: cfg.EndpointSet | None
    ) -> ClusterRuntime:
        key = (name, port)
        cluster = self._clusters.get(key)
        if cluster is None:
            cluster = ClusterRuntime(settings, port, self._rng)
            cluster.update(settings, endpoints.endpoints if endpoints else ())
            self._clusters[key] = cluster
        return cluster

    def sync(self, settings: dict[str, cfg.Cluster], endpoints: dict[str, cfg.EndpointSet]) -> None:
        """Apply a new config to every live cluster; drop clusters that are gone."""
        for key, cluster in list(self._clusters.items()):
            name = key[0]
            if name not in settings:
                del self._clusters[key]
                continue
            eps = endpoints.get(name)
            cluster.update(settings[name], eps.endpoints if eps else ())

    def endpoint(self, cluster: str, key: str) -> EndpointState | None:
        """The live endpoint `key` (`address:port`) of cluster `cluster`, on any port;
        for telemetry, which knows a request's cluster and upstream host only."""
        for (name, _), runtime in self._clusters.items():
            if name == cluster:
                found = runtime.endpoint(key)
                if found is not None:
                    return found
        return None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._clusters.values())
