"""The data-plane engine: sidecar and gateway (and, with ambient mode, waypoint) are this
proxy with listeners of different roles.

Layers, bottom up: `protocols` (sans-IO parsers), `filters`, `upstream` (clusters,
balancers, pools), the config (`active_config`, `routing`, `gateway`), `router` (roles,
the one retry loop, what a request is), the protocol shells `http1` and `http2`, then
`core` (the process's shared state) and `listeners` (binding, TCP routing, draining).
L4 plumbing (relay, dialer, TLS layer, original destination, drain) is `mycelium.net`.
"""
