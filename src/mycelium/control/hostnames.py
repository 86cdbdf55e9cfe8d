"""The Gateway API's hostname intersection: which names a route's hostname and a
listener's have in common. Pure functions, used by the gateway bundle's compiler
(which routes attach to which listener, `compiler/gateway.py`) and the egress route's
(which egress gateway listener serves an external host, `compiler/egress.py`)."""

from __future__ import annotations


def intersect_hostnames(route_host: str, listener_host: str | None) -> str | None:
    """The names a route's hostname and a listener's have in common, as one hostname
    (maybe a `*.suffix` wildcard), or None. A wildcard covers one or more labels in
    front of its suffix (`*.example.com` covers `a.example.com`, `a.b.example.com`,
    not `example.com`), as the Gateway API says."""
    route_host = route_host.lower()
    if listener_host is None:
        return route_host
    listener_host = listener_host.lower()
    if route_host == listener_host:
        return route_host
    if wildcard_covers(listener_host, route_host):
        return route_host
    if wildcard_covers(route_host, listener_host):
        return listener_host
    return None


def wildcard_covers(pattern: str, name: str) -> bool:
    """Whether wildcard `pattern` (`*.suffix`) covers `name` (a host or a narrower
    wildcard); False when `pattern` is no wildcard."""
    if not pattern.startswith("*."):
        return False
    suffix = pattern[1:]
    return name.endswith(suffix) and len(name) > len(suffix) and name != pattern
