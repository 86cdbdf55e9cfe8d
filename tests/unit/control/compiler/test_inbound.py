"""The inbound bundle as data in, data out: the policies that select a workload in, its
`inbound` entry out."""

from __future__ import annotations

from tests.support.compiler_meshes import mesh, service

from mycelium.control.compiler.inbound import compile_inbound
from mycelium.discovery.protocol import NodeInfo


def test_inbound_takes_the_most_specific_peer_authentication() -> None:
    state = mesh(
        service("reviews")
        + service("reviews-admin", port=9090, extra="")
        + """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: namespace-wide}
spec: {mtls: {mode: STRICT}}
---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: reviews-permissive}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {9080: {mode: DISABLE}}
"""
    )
    reviews = NodeInfo(id="r", namespace="default", workload="r", labels={"app": "reviews"})
    other = NodeInfo(id="o", namespace="default", workload="o", labels={"app": "reviews-admin"})
    ports = compile_inbound(state, reviews).entries["inbound"].body["ports"]
    assert [(p["port"], p["mtls"]) for p in ports] == [(9080, "DISABLE")]
    ports = compile_inbound(state, other).entries["inbound"].body["ports"]
    assert [(p["port"], p["mtls"]) for p in ports] == [(9090, "STRICT")]


def test_inbound_carries_the_policies_that_select_the_workload() -> None:
    state = mesh(
        service("reviews")
        + """---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: only-productpage}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: for-someone-else}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{}]
"""
    )
    reviews = NodeInfo(
        id="r",
        namespace="default",
        workload="r",
        labels={"app": "reviews"},
        service_account="reviews",
    )
    inbound = compile_inbound(state, reviews).entries["inbound"].body
    assert inbound["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert [p["name"] for p in inbound["authorization"]] == ["default/only-productpage"]
    rule = inbound["authorization"][0]["rules"][0]
    assert rule["sources"][0]["principals"] == ["cluster.local/ns/default/sa/productpage"]
    assert rule["operations"][0]["methods"] == ["GET"]
