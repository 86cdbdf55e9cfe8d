"""The gateway bundle: a gateway proxy's listeners and the routes on them.

Pure, like the rest of the compiler. A proxy in the gateway role (`roles`) runs the listeners
of every Gateway in its namespace whose selector matches its labels. Per listener:

- HTTP and HTTPS: the rules of every HTTPRoute whose parentRefs name the Gateway (and
  the listener's port, when the parentRef gives one), grouped into virtual hosts by the
  intersection of the route's hostnames with the listener's, as the Gateway API defines
  it (`intersect_hostnames`). Rules compile exactly as a sidecar's do, so weights,
  subsets, filters, retries, timeouts and faults behave the same at the edge;
- TCP and TLS: the backends of the first TCPRoute (by namespace/name) attached to it.

A backendRef without a port goes to its Service's first port: the port a request came
in on at the edge (80, 443) says nothing about the Service's.

Listeners that cannot share a port (an HTTP and a TLS one, two TCP ones, the same
hostname twice) keep the first (by Gateway name, then listener order) and the others
are dropped; that, and every route that names one of the Gateways but attaches to no
listener, is listed in the entry's `problems`, for an operator to read.

Topic: `gateways:<ns>`, touched by any change to a Gateway in `<ns>` or to a route
whose parent is one; backends add their `service:` topics as sidecar routes do.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from mycelium.control.compiler.common import Bundle
from mycelium.control.compiler.service import backend_cluster, compile_http_rule
from mycelium.control.compiler.topics import gateway_topic
from mycelium.control.hostnames import intersect_hostnames
from mycelium.control.state import MeshState, labels_match
from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import NodeInfo

type PortFamily = Literal["http", "tls", "tcp"]

# How a port's connections are told apart: by Host header, by SNI, or not at all.
_FAMILY: dict[str, PortFamily] = {"HTTP": "http", "HTTPS": "tls", "TLS": "tls", "TCP": "tcp"}
_ROUTE_PROTOCOLS = {"HTTPRoute": ("HTTP", "HTTPS"), "TCPRoute": ("TCP", "TLS")}


def compile_gateway(state: MeshState, node: NodeInfo) -> Bundle:
    """The `gateway` entry of a gateway proxy, with the clusters its routes send to."""
    bundle = Bundle()
    ns = node.namespace
    bundle.topics.add(gateway_topic(ns))
    problems: list[str] = []
    listeners: list[cfg.GatewayListener] = []
    families: dict[int, tuple[PortFamily, str]] = {}  # port -> family, first listener
    served: dict[tuple[int, str | None], str] = {}  # (port, hostname) -> listener
    gateways = sorted(state.of_kind("Gateway", ns), key=lambda g: g.metadata.name)
    for gateway in gateways:
        if not labels_match(gateway.spec.selector, node.labels):
            continue
        placed = []
        for listener in gateway.spec.listeners:
            name = f"{ns}/{gateway.metadata.name}/{listener.name}"
            family = _FAMILY[listener.protocol]
            first = families.setdefault(listener.port, (family, name))
            clash = _port_clash(listener, name, family, first, served)
            if clash is not None:
                problems.append(f"listener {name} is not served: {clash}")
                continue
            served[(listener.port, listener.hostname)] = name
            placed.append(listener)
            listeners.append(_listener(state, gateway, listener, name, bundle))
        problems += _unattached_routes(state, gateway, placed)
    listeners.sort(key=lambda listener: (listener.port, listener.name))
    bundle.add("gateway", cfg.GatewayConfig(listeners=listeners, problems=problems))
    return bundle


def _port_clash(
    listener: Any,
    name: str,
    family: PortFamily,
    first: tuple[PortFamily, str],
    served: dict[tuple[int, str | None], str],
) -> str | None:
    """Why `listener` (called `name`) cannot share its port with those placed before it."""
    first_family, first_name = first
    port = listener.port
    if first_name == name:
        return None
    if first_family != family:
        return (
            f"port {port} is already served by {first_name}, whose protocol cannot share "
            f"a port with {listener.protocol}"
        )
    if family == "tcp":
        return f"port {port} is already relayed by {first_name}; a TCP port takes one listener"
    holder = served.get((port, listener.hostname))
    if holder is not None:
        host = listener.hostname or "any host"
        return f"port {port} already serves {host} (listener {holder})"
    return None


def _listener(
    state: MeshState, gateway: Any, listener: Any, name: str, bundle: Bundle
) -> cfg.GatewayListener:
    tls = listener.tls
    common: dict[str, Any] = {
        "name": name,
        "port": listener.port,
        "protocol": listener.protocol,
        "hostname": listener.hostname,
        "tls": (
            cfg.GatewayTls(
                mode=tls.mode, certificate_file=tls.certificate_file, key_file=tls.key_file
            )
            if tls is not None
            else None
        ),
    }
    gw_ns, gw_name = gateway.metadata.namespace, gateway.metadata.name
    if listener.protocol in ("HTTP", "HTTPS"):
        by_host: dict[str, list[cfg.HttpRule]] = {}
        for route in state.routes_of_gateway("HTTPRoute", gw_ns, gw_name):
            if not _attaches(route, gateway, listener):
                continue
            names = _route_hostnames(route, listener)
            if not names:
                continue
            rules = [
                _gateway_rule(state, route, index, rule, bundle)
                for index, rule in enumerate(route.spec.rules)
            ]
            for host in names:
                by_host.setdefault(host, []).extend(rules)
        virtual_hosts = [
            cfg.VirtualHost(hostname=host, rules=rules) for host, rules in sorted(by_host.items())
        ]
        return cfg.GatewayListener(virtual_hosts=virtual_hosts, **common)
    backends: list[cfg.WeightedCluster] = []
    for route in state.routes_of_gateway("TCPRoute", gw_ns, gw_name):
        if not _attaches(route, gateway, listener):
            continue
        route_ns = route.metadata.namespace
        for rule in route.spec.rules:
            backends += [
                _with_port(state, backend_cluster(ref, route_ns, bundle, state), ref, route_ns)
                for ref in rule.backend_refs
            ]
        break  # the first TCPRoute wins, as for a Service's port
    return cfg.GatewayListener(tcp_backends=backends, **common)


def _gateway_rule(
    state: MeshState, route: Any, index: int, rule: Any, bundle: Bundle
) -> cfg.HttpRule:
    """A route rule compiled as for a sidecar, with every backend's port made explicit."""
    compiled = compile_http_rule(route, index, rule, bundle, state)
    route_ns = route.metadata.namespace
    backends = [
        _with_port(state, backend, ref, route_ns)
        for backend, ref in zip(compiled.backends, rule.backend_refs, strict=True)
    ]
    return msgspec.structs.replace(compiled, backends=backends)


def _with_port(
    state: MeshState, backend: cfg.WeightedCluster, ref: Any, route_ns: str
) -> cfg.WeightedCluster:
    if backend.port is not None:
        return backend
    service = state.get("Service", ref.namespace or route_ns, ref.name)
    if service is None or not service.spec.ports:
        return backend
    return msgspec.structs.replace(backend, port=service.spec.ports[0].port)


def _parents(route: Any, gateway: Any) -> list[Any]:
    """The route's parentRefs that name `gateway`."""
    route_ns = route.metadata.namespace
    return [
        parent
        for parent in route.spec.parent_refs
        if parent.kind == "Gateway"
        and parent.name == gateway.metadata.name
        and (parent.namespace or route_ns) == gateway.metadata.namespace
    ]


def _attaches(route: Any, gateway: Any, listener: Any) -> bool:
    """Whether a parentRef of `route` names this listener's Gateway and port."""
    return any(
        parent.port is None or parent.port == listener.port for parent in _parents(route, gateway)
    )


def _route_hostnames(route: Any, listener: Any) -> list[str]:
    """The virtual host names `route` serves on `listener`: "*" for any host the listener
    takes, else the intersections of its hostnames with the listener's ([] for none)."""
    if not route.spec.hostnames:
        return ["*"]
    found = []
    for host in route.spec.hostnames:
        common = intersect_hostnames(host, listener.hostname)
        if common is not None and common not in found:
            found.append(common)
    return found


def _unattached_routes(state: MeshState, gateway: Any, listeners: list[Any]) -> list[str]:
    """A sentence for every route that names `gateway` yet attaches to none of its
    (served) listeners."""
    gw_ns, gw_name = gateway.metadata.namespace, gateway.metadata.name
    problems = []
    for kind, protocols in _ROUTE_PROTOCOLS.items():
        fitting = [listener for listener in listeners if listener.protocol in protocols]
        for route in state.routes_of_gateway(kind, gw_ns, gw_name):
            what = f"{kind} {route.metadata.namespace}/{route.metadata.name}"
            gw = f"Gateway {gw_ns}/{gw_name}"
            ports = {parent.port for parent in _parents(route, gateway)}
            on_port = [listener for listener in fitting if None in ports or listener.port in ports]
            if not fitting:
                problems.append(f"{what}: {gw} has no {' or '.join(protocols)} listener")
            elif not on_port:
                wanted = ", ".join(str(port) for port in sorted(p for p in ports if p))
                problems.append(
                    f"{what}: {gw} has no {' or '.join(protocols)} listener on port {wanted}"
                )
            elif kind == "HTTPRoute" and not any(
                _route_hostnames(route, listener) for listener in on_port
            ):
                served = ", ".join(sorted({listener.hostname or "*" for listener in on_port}))
                problems.append(
                    f"{what}: none of its hostnames ({', '.join(route.spec.hostnames)}) is "
                    f"served by a listener of {gw} (they serve: {served})"
                )
    return problems
