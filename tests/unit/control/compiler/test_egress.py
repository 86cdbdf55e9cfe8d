"""External Services and the namespaces' egress policy, compiled: data in, entries out."""

from __future__ import annotations

from tests.support.compiler_meshes import mesh

from mycelium.control.compiler.inbound import compile_inbound
from mycelium.control.compiler.roles import compile_snapshot
from mycelium.control.compiler.service import compile_service
from mycelium.control.compiler.topics import topics_of_change
from mycelium.discovery.config import parse_entry
from mycelium.discovery.protocol import NodeInfo

EXTERNAL_API = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: example-api, namespace: shop}
spec:
  external: true
  hosts: [api.example.com]
  vip: 198.19.9.9
  ports: [{name: http, port: 80, targetPort: 8080}]
  endpoints:
    - {address: 203.0.113.10}
    - {address: 203.0.113.11, ports: {http: 8081}}
"""

CALLER = NodeInfo(id="cart-0", namespace="shop", workload="cart-0", labels={"app": "cart"})


def accepted(entries: dict[str, object]) -> None:
    """Every entry is one a proxy accepts."""
    for name, entry in entries.items():
        parse_entry(name, entry.body)  # type: ignore[attr-defined]


def test_an_external_service_is_called_in_plaintext_at_its_endpoints() -> None:
    entries = compile_snapshot(mesh(EXTERNAL_API), CALLER, ["api.example.com"])
    accepted(entries)
    route = entries["route/example-api.shop"].body
    assert "api.example.com" in route["hosts"]
    assert route["vip"] == "198.19.9.9"
    assert route["http_rules"][0]["backends"] == [
        {"cluster": "example-api.shop", "port": None, "weight": 1}
    ]
    assert entries["cluster/example-api.shop"].body["mtls"] is False
    endpoints = entries["endpoints/example-api.shop"].body["endpoints"]
    assert [(e["address"], e["ports"], e["mtls"], e["identity"]) for e in endpoints] == [
        ("203.0.113.10", {"80": 8080}, False, ""),
        ("203.0.113.11", {"80": 8081}, False, ""),
    ]


SHOP_EGRESS = """---
apiVersion: mycelium.io/v1
kind: Namespace
metadata: {name: shop}
spec:
  egress: {policy: REGISTRY_ONLY, gateway: egress}
---
apiVersion: mycelium.io/v1
kind: Gateway
metadata: {name: egress, namespace: shop}
spec:
  selector: {app: egress-gateway}
  listeners:
    - {name: other, port: 8081, protocol: HTTP, hostname: other.example.com}
    - {name: api, port: 8080, protocol: HTTP, hostname: "*.example.com"}
    - {name: any, port: 8090, protocol: HTTP}
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: example-api, namespace: shop}
spec:
  parentRefs: [{kind: Gateway, name: egress, port: 8080}]
  hostnames: [api.example.com]
  rules: [{backendRefs: [{name: example-api}]}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata:
  name: egress-0
  namespace: shop
  labels: {app: egress-gateway}
  annotations: {mycelium.io/registered-by: egress-0}
spec: {address: 127.0.0.40, serviceAccount: egress}
"""


def test_a_namespace_egress_gateway_carries_calls_to_external_services() -> None:
    entries = compile_snapshot(mesh(EXTERNAL_API + SHOP_EGRESS), CALLER, ["api.example.com"])
    accepted(entries)
    route = entries["route/example-api.shop"].body
    assert [r["backends"] for r in route["http_rules"]] == [
        [{"cluster": "egress~egress.shop", "port": 8080, "weight": 1}]
    ]
    assert route["tcp_backends"] == []  # never around the gateway
    [gateway] = entries["endpoints/egress~egress.shop"].body["endpoints"]
    assert (gateway["address"], gateway["ports"], gateway["mtls"], gateway["identity"]) == (
        "127.0.0.40",
        {"8080": 8080},
        True,
        "spiffe://cluster.local/ns/shop/sa/egress",
    )
    # The caller never learns the external endpoints: only the gateway reaches them.
    assert "endpoints/example-api.shop" not in entries


def test_the_egress_gateway_itself_reaches_the_external_endpoints() -> None:
    gateway = NodeInfo(
        id="egress-0",
        namespace="shop",
        workload="egress-0",
        labels={"app": "egress-gateway"},
        role="gateway",
    )
    entries = compile_snapshot(mesh(EXTERNAL_API + SHOP_EGRESS), gateway, [])
    accepted(entries)
    listeners = {lst["name"]: lst for lst in entries["gateway"].body["listeners"]}
    [host] = listeners["shop/egress/api"]["virtual_hosts"]
    assert host["hostname"] == "api.example.com"
    assert host["rules"][0]["backends"] == [
        {"cluster": "example-api.shop", "port": 80, "weight": 1}
    ]
    assert entries["cluster/example-api.shop"].body["mtls"] is False
    assert [e["address"] for e in entries["endpoints/example-api.shop"].body["endpoints"]] == [
        "203.0.113.10",
        "203.0.113.11",
    ]


def test_the_egress_policy_reaches_the_namespaces_sidecars() -> None:
    state = mesh(EXTERNAL_API + SHOP_EGRESS)
    assert compile_inbound(state, CALLER).entries["inbound"].body["egress_policy"] == (
        "REGISTRY_ONLY"
    )
    elsewhere = NodeInfo(id="a-0", namespace="default", workload="a-0", labels={})
    assert compile_inbound(state, elsewhere).entries["inbound"].body["egress_policy"] == (
        "ALLOW_ANY"
    )


def test_without_an_egress_gateway_a_gateway_of_another_namespace_changes_nothing() -> None:
    caller = NodeInfo(id="a-0", namespace="default", workload="a-0", labels={})
    entries = compile_snapshot(mesh(EXTERNAL_API + SHOP_EGRESS), caller, ["api.example.com"])
    backends = entries["route/example-api.shop"].body["http_rules"][0]["backends"]
    assert backends == [{"cluster": "example-api.shop", "port": None, "weight": 1}]


def test_a_gateway_without_a_listener_for_the_host_leaves_callers_an_empty_cluster() -> None:
    only_other = SHOP_EGRESS.replace(
        '    - {name: api, port: 8080, protocol: HTTP, hostname: "*.example.com"}\n', ""
    ).replace("    - {name: any, port: 8090, protocol: HTTP}\n", "")
    text = EXTERNAL_API + only_other.replace("port: 8080}]", "port: 8081}]")
    entries = compile_snapshot(mesh(text), CALLER, ["api.example.com"])
    accepted(entries)
    assert entries["endpoints/egress~egress.shop"].body["endpoints"] == []


def test_namespace_gateway_and_gateway_workload_changes_reach_the_callers_route() -> None:
    state = mesh(EXTERNAL_API + SHOP_EGRESS)
    bundle = compile_service(state, "api.example.com", "shop")
    [namespace] = [r for r in state.of_kind("Namespace") if r.metadata.name == "shop"]
    [gateway_wl] = state.of_kind("Workload", "shop")
    [gateway] = state.of_kind("Gateway", "shop")
    for changed in (namespace, gateway_wl, gateway):
        assert topics_of_change(state, changed, changed) & bundle.topics, changed.kind
