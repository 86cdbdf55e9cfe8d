"""Every well-known port of the mesh, named once (Istio's numbers, so that users and
their tools feel at home: DESIGN.md, "Ports")."""

from __future__ import annotations

# A proxy's listeners.
ADMIN = 15000  # admin endpoints, loopback only
OUTBOUND = 15001  # outbound capture: the app's calls, redirected or through HTTP_PROXY
INBOUND = 15006  # inbound: mTLS from peers, plaintext only where policy allows
HBONE = 15008  # HTTP/2 CONNECT over mTLS between ztunnels and waypoints
METRICS = 15020  # Prometheus metrics (/stats/prometheus)
HEALTH = 15021  # readiness (/healthz/ready)
DNS = 15053  # DNS inside ambient pods

# The controller's listeners.
DISCOVERY = 15012  # the discovery stream and certificate signing (TLS)
API = 15014  # REST API, dashboard, the controller's own metrics
