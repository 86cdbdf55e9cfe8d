"""The config compiler: resources and registered workloads in, per-proxy config out.

Pure functions over a `MeshState`; no I/O, no clock, no randomness. A proxy's snapshot
is made of bundles: those its role receives for itself (`roles.ROLE_BUNDLES`: every
proxy its `inbound`, a gateway also its `gateway`) and, for every service it subscribed
to, that service's route with the clusters and endpoints the route can send to — so a
snapshot grows with what the proxy talks to, not with the mesh. Each bundle names the
topics it depends on (`topics`), which is how the discovery server knows whom to
recompile and push after a change.

One module per capability, imported one way only (the acyclic contract in
pyproject.toml holds it): `common` and `topics` at the bottom; `egress` (a caller's
route through its namespace's egress gateway); `inbound` (a proxy's own workload);
`service` (a caller's route to a service); `gateway` (a gateway proxy's listeners);
`roles` on top, mapping each proxy role to the bundles it receives.
"""
