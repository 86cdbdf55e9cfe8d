"""The service bundle: everything a caller needs to reach one service — its route (the
HTTPRoute rules or TCPRoute backends attached to it, else a default rule), and the
clusters and endpoints the route can send to, with their DestinationPolicy settings.

Compiled once per (caller namespace, reference) and shared by every proxy that
subscribed to it, whatever its role. A reference that names nothing visible compiles to
an `unresolved/` entry saying so. A caller's route to an external Service goes through
its namespace's egress gateway when it names one (`egress`).

Pure, like the rest of the compiler.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mycelium.control.compiler.common import (
    REGISTERED_BY,
    Bundle,
    route_match,
    route_ports,
    workload_endpoint,
)
from mycelium.control.compiler.egress import add_route_through_egress_gateway, egress_gateway
from mycelium.control.compiler.inbound import peer_authentication
from mycelium.control.compiler.topics import SERVICES_TOPIC, policy_topic, service_topic
from mycelium.control.state import MeshState, all_hosts, service_key
from mycelium.discovery import config as cfg


def compile_service(state: MeshState, reference: str, from_namespace: str) -> Bundle:
    """Everything a caller needs to reach the service that `reference` names."""
    bundle = Bundle()
    service = state.resolve_service(reference, from_namespace)
    if service is None or not state.resolves_by_name(reference, service):
        # An address, an extra host name or a miss can change meaning whenever any
        # service appears, goes or changes its VIP or hosts.
        bundle.topics.add(SERVICES_TOPIC)
    if service is None:
        bundle.add(
            f"unresolved/{reference}",
            cfg.Unresolved(
                subscription=reference,
                reason=f"no Service named {reference!r} is visible from namespace "
                f"{from_namespace!r}",
            ),
        )
        return bundle
    svc_name = service_key(service.metadata.namespace, service.metadata.name)
    bundle.topics.add(service_topic(svc_name))
    ns = service.metadata.namespace
    if service.spec.external:
        bundle.topics.add(policy_topic(from_namespace))  # the caller's Namespace: its egress
        gateway = egress_gateway(state, from_namespace)
        if gateway is not None:
            add_route_through_egress_gateway(state, service, from_namespace, gateway, bundle)
            return bundle

    http_rules: list[cfg.HttpRule] = []
    for route in state.http_routes_for(ns, service.metadata.name):
        for index, rule in enumerate(route.spec.rules):
            http_rules.append(compile_http_rule(route, index, rule, bundle, state))
    default_backend = cfg.WeightedCluster(cluster=svc_name, weight=1)
    if not http_rules:
        # No HTTPRoute: every request goes to the service. With one, a request no rule
        # matches is answered 404 `no_route`, as the Gateway API says it must be.
        http_rules.append(cfg.HttpRule(name="default", backends=[default_backend]))
    _add_cluster(state, service, None, bundle)

    tcp_backends: list[cfg.WeightedCluster] = []
    for route in state.tcp_routes_for(ns, service.metadata.name):
        for rule in route.spec.rules:
            tcp_backends.extend(
                backend_cluster(ref, route.metadata.namespace, bundle, state)
                for ref in rule.backend_refs
            )
        break  # the first TCPRoute (by name) wins; several make no sense for one port
    if not tcp_backends:
        tcp_backends = [default_backend]

    bundle.add(
        f"route/{svc_name}",
        cfg.ServiceRoute(
            service=svc_name,
            hosts=all_hosts(service),
            vip=str(service.spec.vip) if service.spec.vip else None,
            ports=route_ports(service),
            http_rules=http_rules,
            tcp_backends=tcp_backends,
        ),
    )
    return bundle


def compile_http_rule(
    route: Any, index: int, rule: Any, bundle: Bundle, state: MeshState
) -> cfg.HttpRule:
    ns = route.metadata.namespace
    matches = [route_match(m) for m in rule.matches]
    filters = rule.filters
    retries = None
    if rule.retries is not None:
        retries = cfg.RetryPolicy(
            attempts=rule.retries.attempts,
            per_try_timeout=rule.retries.per_try_timeout,
            retry_on=list(rule.retries.retry_on),
            retriable_status_codes=list(rule.retries.retriable_status_codes),
        )
    fault = None
    if rule.fault is not None:
        delay, abort = rule.fault.delay, rule.fault.abort
        fault = cfg.FaultPolicy(
            delay_seconds=delay.fixed_delay if delay else None,
            delay_percentage=delay.percentage if delay else 0.0,
            abort_status=abort.http_status if abort else None,
            abort_percentage=abort.percentage if abort else 0.0,
        )
    mirror = None
    if rule.mirror is not None:
        target = backend_cluster(rule.mirror.backend_ref, ns, bundle, state)
        mirror = cfg.MirrorPolicy(
            cluster=target.cluster, port=target.port, percentage=rule.mirror.percentage
        )
    return cfg.HttpRule(
        name=f"{ns}/{route.metadata.name}#{index}",
        matches=matches,
        backends=[backend_cluster(ref, ns, bundle, state) for ref in rule.backend_refs],
        timeout=rule.timeout,
        retries=retries,
        fault=fault,
        mirror=mirror,
        request_headers=_header_edits(filters.request_headers if filters else None),
        response_headers=_header_edits(filters.response_headers if filters else None),
        rewrite=_rewrite(filters.url_rewrite if filters else None),
    )


def _header_edits(edits: Any) -> cfg.HeaderEdits | None:
    if edits is None:
        return None
    return cfg.HeaderEdits(set=dict(edits.set), add=dict(edits.add), remove=list(edits.remove))


def _rewrite(rewrite: Any) -> cfg.Rewrite | None:
    if rewrite is None:
        return None
    path = rewrite.path
    return cfg.Rewrite(
        replace_prefix_match=path.replace_prefix_match if path else None,
        replace_full_path=path.replace_full_path if path else None,
        hostname=rewrite.hostname,
    )


def backend_cluster(
    ref: Any, route_namespace: str, bundle: Bundle, state: MeshState
) -> cfg.WeightedCluster:
    ns = ref.namespace or route_namespace
    svc_name = service_key(ns, ref.name)
    service = state.get("Service", ns, ref.name)
    bundle.topics.add(service_topic(svc_name))
    cluster = f"{svc_name}/{ref.subset}" if ref.subset else svc_name
    if service is not None:
        _add_cluster(state, service, ref.subset, bundle)
    return cfg.WeightedCluster(cluster=cluster, port=ref.port, weight=getattr(ref, "weight", 1))


def _add_cluster(state: MeshState, service: Any, subset: str | None, bundle: Bundle) -> None:
    ns, name = service.metadata.namespace, service.metadata.name
    svc_name = service_key(ns, name)
    cluster_name = f"{svc_name}/{subset}" if subset else svc_name
    if f"cluster/{cluster_name}" in bundle.entries:
        return
    policy = state.destination_policy_for(ns, name)
    subset_labels: dict[str, str] = {}
    if subset and policy is not None:
        for s in policy.spec.subsets:
            if s.name == subset:
                subset_labels = dict(s.labels)
    cluster = _cluster(cluster_name, svc_name, subset, policy)
    http2_ports = [p.port for p in service.spec.ports if p.protocol in HTTP2_PROTOCOLS]
    if http2_ports:
        cluster = msgspec.structs.replace(cluster, http2_ports=http2_ports)
    if service.spec.external:
        # Nothing outside the mesh runs a proxy: never originate mTLS to it.
        cluster = msgspec.structs.replace(cluster, mtls=False)
    bundle.add(f"cluster/{cluster_name}", cluster)

    port_map = {p.port: p.target_port or p.port for p in service.spec.ports}
    if service.spec.external:
        bundle.add(
            f"endpoints/{cluster_name}",
            cfg.EndpointSet(cluster=cluster_name, endpoints=_external_endpoints(service)),
        )
        return
    endpoints = []
    bundle.topics.add(policy_topic(ns))  # PeerAuthentication decides plaintext_ports
    for wl in state.workloads_of(service):
        if subset is not None and not all(
            wl.metadata.labels.get(k) == v for k, v in subset_labels.items()
        ):
            continue
        registered = REGISTERED_BY in wl.metadata.annotations
        peer_auth = peer_authentication(state, wl.metadata.namespace, wl.metadata.labels)
        disabled = [
            p for p in port_map if peer_auth.get(p, peer_auth.get(0, "PERMISSIVE")) == "DISABLE"
        ]
        # A workload its proxy registered has that proxy in front: it speaks mTLS.
        endpoints.append(
            workload_endpoint(
                wl,
                {str(p): t for p, t in port_map.items()},
                registered,
                plaintext_ports=disabled if registered else [],
            )
        )
    endpoints.sort(key=lambda e: e.workload)
    bundle.add(
        f"endpoints/{cluster_name}", cfg.EndpointSet(cluster=cluster_name, endpoints=endpoints)
    )


def _external_endpoints(service: Any) -> list[cfg.Endpoint]:
    """An external Service's endpoints: plaintext, no identity to check."""
    ns, name = service.metadata.namespace, service.metadata.name
    endpoints = []
    for endpoint in service.spec.endpoints:
        ports = {
            str(p.port): endpoint.ports.get(p.name, p.target_port or p.port)
            for p in service.spec.ports
        }
        endpoints.append(
            cfg.Endpoint(
                workload=f"{ns}/{name}@{endpoint.address}",
                address=str(endpoint.address),
                ports=ports,
                identity="",
                mtls=False,
            )
        )
    return endpoints


# Service port protocols whose requests go upstream over HTTP/2.
HTTP2_PROTOCOLS = frozenset({"HTTP2", "GRPC"})


def _cluster(cluster_name: str, svc_name: str, subset: str | None, policy: Any) -> cfg.Cluster:
    if policy is None:
        return cfg.Cluster(name=cluster_name, service=svc_name, subset=subset)
    spec = policy.spec
    lb = spec.load_balancer
    pool = spec.connection_pool
    outlier = spec.outlier_detection
    budget = spec.retry_budget
    return cfg.Cluster(
        name=cluster_name,
        service=svc_name,
        subset=subset,
        balancer=lb.type if lb else "P2C_EWMA",
        consistent_hash=(
            cfg.ConsistentHash(
                header=lb.consistent_hash.header,
                cookie=lb.consistent_hash.cookie,
                source_ip=bool(lb.consistent_hash.source_ip),
            )
            if lb and lb.consistent_hash
            else None
        ),
        connection_pool=(
            cfg.ConnectionPool(
                max_connections=pool.max_connections,
                max_pending_requests=pool.max_pending_requests,
                max_requests_in_flight=pool.max_requests_in_flight,
                **_present(connect_timeout=pool.connect_timeout, idle_timeout=pool.idle_timeout),
            )
            if pool
            else cfg.ConnectionPool()
        ),
        outlier_detection=(
            cfg.OutlierDetection(
                consecutive_5xx=outlier.consecutive_5xx_errors,
                consecutive_gateway_errors=outlier.consecutive_gateway_errors,
                interval=outlier.interval,
                base_ejection_time=outlier.base_ejection_time,
                max_ejection_percent=outlier.max_ejection_percent,
            )
            if outlier
            else None
        ),
        retry_budget=(
            cfg.RetryBudget(
                ratio=budget.ratio,
                min_retries_per_second=budget.min_retries_per_second,
                ttl=budget.ttl,
            )
            if budget
            else cfg.RetryBudget()
        ),
    )


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
