"""Egress through a gateway: a caller's route to an external Service when the caller's
Namespace names an egress gateway.

Such a route sends every request to that Gateway's proxies (cluster
`egress~<gateway>.<ns>`, over mTLS) instead of the Service's own endpoints, which only
the gateway's snapshot then holds. This is a piece of the caller's service bundle
(`service.compile_service`), not a bundle of its own: the egress gateway itself is a
proxy in the gateway role and gets the `gateway` bundle like any other.

Pure, like the rest of the compiler.
"""

from __future__ import annotations

from typing import Any

from mycelium.api.namespace import NamespaceEgress
from mycelium.control.compiler.common import (
    REGISTERED_BY,
    Bundle,
    route_ports,
    workload_endpoint,
)
from mycelium.control.compiler.topics import gateway_topic, gateway_workloads_topic
from mycelium.control.hostnames import intersect_hostnames
from mycelium.control.state import MeshState, all_hosts, service_key
from mycelium.discovery import config as cfg


def namespace_egress(state: MeshState, namespace: str) -> NamespaceEgress:
    """`namespace`'s egress settings (the defaults when it has no Namespace resource)."""
    resource = state.get("Namespace", "", namespace)
    return resource.spec.egress if resource is not None else NamespaceEgress()


def egress_gateway(state: MeshState, namespace: str) -> str | None:
    """The name of the Gateway that carries `namespace`'s calls to external Services."""
    return namespace_egress(state, namespace).gateway


def egress_cluster_name(namespace: str, gateway: str) -> str:
    """The cluster of an egress gateway's proxies; `~` keeps it apart from any Service's."""
    return f"egress~{gateway}.{namespace}"


def add_route_through_egress_gateway(
    state: MeshState, service: Any, namespace: str, gateway_name: str, bundle: Bundle
) -> None:
    """A caller's route to external `service` when its `namespace` names an egress
    gateway: every request goes, over mTLS and with its Host kept, to the gateway's
    HTTP listener for the service's hosts; the gateway's HTTPRoutes take it from there.
    TCP ports get no backend (the gateway relays no opaque bytes outside yet), so the
    caller refuses their connections rather than going around the gateway."""
    svc_name = service_key(service.metadata.namespace, service.metadata.name)
    hosts = all_hosts(service)
    cluster_name = egress_cluster_name(namespace, gateway_name)
    bundle.topics.update(
        {gateway_topic(namespace), gateway_workloads_topic(namespace, gateway_name)}
    )
    gateway = state.get("Gateway", namespace, gateway_name)
    port = _egress_listener_port(gateway, service.spec.hosts) if gateway is not None else None
    endpoints = []
    if gateway is not None and port is not None:
        endpoints = [
            workload_endpoint(wl, {str(port): port}, REGISTERED_BY in wl.metadata.annotations)
            for wl in state.workloads_of(gateway)
        ]
    endpoints.sort(key=lambda e: e.workload)
    # No listener (or no Gateway): a cluster without endpoints, so callers are answered
    # 503 naming it, never sent around the gateway.
    bundle.add(
        f"cluster/{cluster_name}",
        cfg.Cluster(name=cluster_name, service=f"{gateway_name}.{namespace}"),
    )
    bundle.add(
        f"endpoints/{cluster_name}", cfg.EndpointSet(cluster=cluster_name, endpoints=endpoints)
    )
    backend = cfg.WeightedCluster(cluster=cluster_name, port=port, weight=1)
    bundle.add(
        f"route/{svc_name}",
        cfg.ServiceRoute(
            service=svc_name,
            hosts=hosts,
            vip=str(service.spec.vip) if service.spec.vip else None,
            ports=route_ports(service),
            http_rules=[
                cfg.HttpRule(name=f"egress/{namespace}/{gateway_name}", backends=[backend])
            ],
            tcp_backends=[],
        ),
    )


def _egress_listener_port(gateway: Any, hosts: list[str]) -> int | None:
    """The port of the Gateway's HTTP listener that serves one of `hosts` (by the
    Gateway API's hostname intersection), else of one that serves any host."""
    listeners = sorted(
        (listener for listener in gateway.spec.listeners if listener.protocol == "HTTP"),
        key=lambda listener: listener.port,
    )
    for listener in listeners:
        if listener.hostname is not None and any(
            intersect_hostnames(host, listener.hostname) for host in hosts
        ):
            return int(listener.port)
    return next((int(lst.port) for lst in listeners if lst.hostname is None), None)
