"""Which service, route and port a request is for — shared by the HTTP/1.1 exchange and
the HTTP/2 stream, so both name, resolve and refuse destinations the same way.

The name comes from a local listener's service reference, or from the Host header /
`:authority`; a gateway's listener finds the route among its own virtual hosts. A name
the proxy has not heard of is subscribed on demand (waiting up to
`ON_DEMAND_WAIT_SECONDS` for its config); still unknown, it is `UnknownService`, or
`EgressDenied` where the namespace's egress policy is REGISTRY_ONLY.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import EgressDenied, UnknownService

if TYPE_CHECKING:
    from mycelium.proxy.active_config import ActiveConfig
    from mycelium.proxy.core import ProxyCore
    from mycelium.proxy.http.exchange import Listener
    from mycelium.proxy.routing import CompiledRoute


async def find_route(
    proxy: ProxyCore, listener: Listener, host: str
) -> tuple[ActiveConfig, str, CompiledRoute]:
    """The config in force, the service key and the compiled route a request with Host
    `host` takes on `listener`. A gateway's listener looks among its own virtual hosts
    (the key is then the gateway listener's name); others by service name."""
    config = proxy.active
    if listener.kind == "gateway":
        destination = config.gateway_destination(listener.port or 0, host)
        return config, destination.service, destination.route
    name = listener.reference or host
    service = config.service_for(name)
    if service is None:
        await proxy.resolve(name)
        config = proxy.active
        service = config.service_for(name)
        if service is None:
            if registry_only(config):
                raise EgressDenied(egress_denied_detail(config, name))
            reason = config.unresolved.get(strip_port(name))
            raise UnknownService(reason or f"no service is known by the name {name!r}")
    route = config.routes.get(service)
    if route is None:
        raise UnknownService(f"no route for service {service} in config {config.version}")
    return config, service, route


def registry_only(config: ActiveConfig) -> bool:
    """Whether this proxy's namespace forbids destinations the registry does not name."""
    return config.inbound is not None and config.inbound.egress_policy == "REGISTRY_ONLY"


def egress_denied_detail(config: ActiveConfig, destination: str) -> str:
    """What an operator reads when a call leaving the mesh was refused."""
    namespace = config.inbound.namespace if config.inbound is not None else "?"
    return (
        f"{destination} is not a Service in the registry, and namespace {namespace} has "
        "egress policy REGISTRY_ONLY: declare it as an external Service (external: true), "
        "or set the Namespace's egress policy to ALLOW_ANY"
    )


def service_port(host: str, from_local_listener: bool, route: cfg.ServiceRoute) -> int:
    """The service port a request means: the Host header's port, else the service's
    first HTTP port. A local listener's own port says nothing about the service's."""
    named = None if from_local_listener else port_of(host)
    return named or first_http_port(route)


def strip_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def port_of(host: str) -> int | None:
    if host.count(":") == 1:
        port = host.rsplit(":", 1)[1]
        if port.isdigit():
            return int(port)
    return None


def first_http_port(route: cfg.ServiceRoute) -> int:
    for port in route.ports:
        if port.protocol in ("HTTP", "HTTP2", "GRPC"):
            return port.port
    return route.ports[0].port if route.ports else 80


def duration_text(seconds: float) -> str:
    """A timeout as people write it in a route: "200ms", "1.5s"."""
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.3g}s"
