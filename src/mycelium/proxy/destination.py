"""Names and ports of destinations: which service port a Host value means, and how a
timeout reads. The lookup itself is the listener's role's (`router.roles`).
"""

from __future__ import annotations

from mycelium.discovery import config as cfg


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
