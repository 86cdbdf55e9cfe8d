"""The gateway compiler as data in, data out: Gateways and attached routes in, a gateway
proxy's `gateway` entry (and the clusters its routes need) out."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support.compiler_meshes import mesh

from mycelium.control.compiler.gateway import compile_gateway
from mycelium.control.compiler.roles import compile_snapshot
from mycelium.control.compiler.topics import topics_of_change
from mycelium.control.hostnames import intersect_hostnames
from mycelium.control.state import MeshState
from mycelium.discovery import config as cfg
from mycelium.discovery.config import parse_entry
from mycelium.discovery.protocol import NodeInfo

GATEWAY_NODE = NodeInfo(
    id="ingress-0", namespace="default", role="gateway", labels={"app": "ingress"}
)

BACKENDS = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9090}, {name: admin, port: 9091}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {name: reviews-v1, labels: {app: reviews, version: v1}}
spec: {address: 198.18.0.1}
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {name: reviews-v2, labels: {app: reviews, version: v2}}
spec: {address: 198.18.0.2}
---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""

GATEWAY = """
---
apiVersion: mycelium.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {app: ingress}
  listeners:
  - {name: http, port: 8080, protocol: HTTP}
  - {name: shop, port: 8080, protocol: HTTP, hostname: shop.example.com}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: "*.example.com"
    tls: {certificateFile: /etc/gw/cert.pem, keyFile: /etc/gw/key.pem}
  - name: db
    port: 5432
    protocol: TCP
  - name: passthrough
    port: 9443
    protocol: TLS
    tls: {mode: Passthrough}
"""

ROUTES = """
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{kind: Gateway, name: public}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /reviews}}]
    backendRefs: [{name: reviews, subset: v1, weight: 80}, {name: reviews, subset: v2, weight: 20}]
    timeout: 2s
  - matches: [{path: {type: PathPrefix, value: /ratings}}]
    backendRefs: [{name: ratings}]
---
apiVersion: mycelium.io/v1
kind: TCPRoute
metadata: {name: db}
spec:
  parentRefs: [{kind: Gateway, name: public, port: 5432}]
  rules: [{backendRefs: [{name: ratings, port: 9091}]}]
"""


def gateway_entry(state: MeshState, node: NodeInfo = GATEWAY_NODE) -> cfg.GatewayConfig:
    body = compile_gateway(state, node).entries["gateway"].body
    parsed = parse_entry("gateway", body)  # what the proxy will validate
    assert isinstance(parsed, cfg.GatewayConfig)
    return parsed


def listener(config: cfg.GatewayConfig, name: str) -> cfg.GatewayListener:
    return next(item for item in config.listeners if item.name == f"default/public/{name}")


def test_http_rules_of_attached_routes_compile_as_for_a_sidecar() -> None:
    config = gateway_entry(mesh(BACKENDS, GATEWAY, ROUTES))
    http = listener(config, "http")
    assert (http.port, http.protocol, http.hostname, http.tls) == (8080, "HTTP", None, None)
    [vhost] = http.virtual_hosts
    assert vhost.hostname == "*"
    reviews, ratings = vhost.rules
    assert reviews.name == "default/site#0"
    assert reviews.timeout == 2.0
    assert [(b.cluster, b.port, b.weight) for b in reviews.backends] == [
        ("reviews.default/v1", 9080, 80),
        ("reviews.default/v2", 9080, 20),
    ]
    # no port on the backendRef: the Service's first port, not the listener's 8080
    assert [(b.cluster, b.port) for b in ratings.backends] == [("ratings.default", 9090)]
    assert config.problems == []


def test_the_clusters_and_endpoints_of_the_backends_come_with_the_entry() -> None:
    entries = compile_gateway(mesh(BACKENDS, GATEWAY, ROUTES), GATEWAY_NODE).entries
    assert {"cluster/reviews.default/v1", "cluster/reviews.default/v2"} <= set(entries)
    v2 = entries["endpoints/reviews.default/v2"].body
    assert [e["address"] for e in v2["endpoints"]] == ["198.18.0.2"]


def test_tls_settings_and_tcp_backends_are_carried() -> None:
    config = gateway_entry(mesh(BACKENDS, GATEWAY, ROUTES))
    https = listener(config, "https")
    assert https.tls == cfg.GatewayTls(
        mode="Terminate", certificate_file="/etc/gw/cert.pem", key_file="/etc/gw/key.pem"
    )
    db = listener(config, "db")
    assert [(b.cluster, b.port) for b in db.tcp_backends] == [("ratings.default", 9091)]
    assert db.virtual_hosts == []
    # the TCPRoute names port 5432: not the passthrough listener on 9443
    assert listener(config, "passthrough").tcp_backends == []
    assert [item.port for item in config.listeners] == sorted(i.port for i in config.listeners)


def test_route_hostnames_select_virtual_hosts_within_the_listeners_hostname() -> None:
    routes = """
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{kind: Gateway, name: public}]
  hostnames: [shop.example.com, "*.example.com", other.org]
  rules: [{backendRefs: [{name: ratings}]}]
"""
    config = gateway_entry(mesh(BACKENDS, GATEWAY, routes))
    assert [v.hostname for v in listener(config, "http").virtual_hosts] == [
        "*.example.com",
        "other.org",
        "shop.example.com",
    ]
    assert [v.hostname for v in listener(config, "shop").virtual_hosts] == ["shop.example.com"]
    # the HTTPS listener serves *.example.com: other.org is outside it
    assert [v.hostname for v in listener(config, "https").virtual_hosts] == [
        "*.example.com",
        "shop.example.com",
    ]


@pytest.mark.parametrize(
    ("route", "listener_host", "common"),
    [
        ("a.example.com", None, "a.example.com"),
        ("a.example.com", "a.example.com", "a.example.com"),
        ("A.Example.com", "a.example.com", "a.example.com"),
        ("a.example.com", "*.example.com", "a.example.com"),
        ("a.b.example.com", "*.example.com", "a.b.example.com"),
        ("*.example.com", "a.example.com", "a.example.com"),
        ("*.b.example.com", "*.example.com", "*.b.example.com"),
        ("*.example.com", "*.b.example.com", "*.b.example.com"),
        ("example.com", "*.example.com", None),
        ("a.example.org", "*.example.com", None),
        ("a.example.com", "b.example.com", None),
    ],
)
def test_hostnames_intersect_as_the_gateway_api_says(
    route: str, listener_host: str | None, common: str | None
) -> None:
    assert intersect_hostnames(route, listener_host) == common


def test_routes_that_attach_to_no_listener_are_reported() -> None:
    routes = """
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: wrong-port}
spec:
  parentRefs: [{kind: Gateway, name: public, port: 9999}]
  rules: [{backendRefs: [{name: ratings}]}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: wrong-host}
spec:
  parentRefs: [{kind: Gateway, name: public, port: 8443}]
  hostnames: [shop.example.org]
  rules: [{backendRefs: [{name: ratings}]}]
"""
    config = gateway_entry(mesh(BACKENDS, GATEWAY, routes))
    assert config.problems == [
        "HTTPRoute default/wrong-host: none of its hostnames (shop.example.org) is served by "
        "a listener of Gateway default/public (they serve: *.example.com)",
        "HTTPRoute default/wrong-port: Gateway default/public has no HTTP or HTTPS listener "
        "on port 9999",
    ]
    assert all(not item.virtual_hosts for item in config.listeners)


def test_listeners_that_cannot_share_a_port_keep_the_first() -> None:
    other = """
---
apiVersion: mycelium.io/v1
kind: Gateway
metadata: {name: second}
spec:
  selector: {app: ingress}
  listeners:
  - {name: clash, port: 8080, protocol: TCP}
  - {name: same-host, port: 8080, protocol: HTTP, hostname: shop.example.com}
  - {name: fine, port: 8081, protocol: HTTP}
"""
    config = gateway_entry(mesh(BACKENDS, GATEWAY, other))
    names = [item.name for item in config.listeners]
    assert "default/second/fine" in names
    assert "default/second/clash" not in names
    assert "default/second/same-host" not in names
    assert config.problems == [
        "listener default/second/clash is not served: port 8080 is already served by "
        "default/public/http, whose protocol cannot share a port with TCP",
        "listener default/second/same-host is not served: port 8080 already serves "
        "shop.example.com (listener default/public/shop)",
    ]


def test_only_gateway_proxies_whose_labels_match_get_listeners() -> None:
    state = mesh(BACKENDS, GATEWAY, ROUTES)
    other = NodeInfo(id="x", role="gateway", labels={"app": "egress"})
    assert gateway_entry(state, other).listeners == []
    sidecar = NodeInfo(id="y", labels={"app": "ingress"})
    assert "gateway" not in compile_snapshot(state, sidecar, [])
    assert "gateway" in compile_snapshot(state, GATEWAY_NODE, [])


def _resource(state: MeshState, kind: str, name: str) -> Any:
    return state.get(kind, "default", name)


def test_changes_to_gateways_routes_and_backends_reach_the_gateway_entry() -> None:
    state = mesh(BACKENDS, GATEWAY, ROUTES)
    topics = compile_gateway(state, GATEWAY_NODE).topics
    for kind, name in [("Gateway", "public"), ("HTTPRoute", "site"), ("TCPRoute", "db")]:
        changed = topics_of_change(state, _resource(state, kind, name), None)
        assert changed & topics, kind
    for backend in ("reviews", "ratings"):
        changed = topics_of_change(state, _resource(state, "Service", backend), None)
        assert changed & topics, backend
    # a route of a Service is not the gateway's business
    sidecar_route = mesh(
        BACKENDS,
        """
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: internal}
spec:
  parentRefs: [{name: reviews}]
  rules: [{backendRefs: [{name: reviews}]}]
""",
    )
    route = _resource(sidecar_route, "HTTPRoute", "internal")
    assert "gateways:default" not in topics_of_change(sidecar_route, route, None)
