"""The compiler as data in, data out: resources and registered workloads in, one proxy's
entries out."""

from __future__ import annotations

import json

from mycelium.api.loading import load_documents
from mycelium.control.compiler import compile_inbound, compile_snapshot, topics_of_change
from mycelium.control.state import MeshState
from mycelium.discovery.config import parse_entry
from mycelium.discovery.protocol import NodeInfo


def mesh(yaml_text: str) -> MeshState:
    state = MeshState()
    for resource in load_documents(yaml_text, source="test.yaml"):
        state.put(resource)
    return state


def service(name: str, ns: str = "default", port: int = 9080, extra: str = "") -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}}}]
{extra}"""


def workload(name: str, app: str, address: str, version: str = "v1", sa: str = "default") -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: {name}, namespace: default, labels: {{app: {app}, version: {version}}}}}
spec: {{address: {address}, serviceAccount: {sa}}}
"""


REVIEWS_SPLIT = (
    service("reviews")
    + workload("reviews-v1-0", "reviews", "198.18.0.1", "v1", "reviews")
    + workload("reviews-v2-0", "reviews", "198.18.0.2", "v2", "reviews")
    + """---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {name: reviews}
spec:
  host: reviews
  loadBalancer: {type: LEAST_REQUEST}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - matches: [{headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: reviews, subset: v2}]
  - backendRefs: [{name: reviews, subset: v1, weight: 90}, {name: reviews, subset: v2, weight: 10}]
    timeout: 2s
    retries: {attempts: 2, perTryTimeout: 500ms}
"""
)

CALLER = NodeInfo(
    id="productpage-0", namespace="default", workload="productpage-0", labels={"app": "productpage"}
)


def test_a_traffic_split_becomes_weighted_subset_clusters_with_their_endpoints() -> None:
    entries = compile_snapshot(mesh(REVIEWS_SPLIT), CALLER, ["reviews"])
    rules = entries["route/reviews.default"].body["http_rules"]
    # no "default" rule after them: a request neither matches is answered 404 no_route
    assert [r["name"] for r in rules] == ["default/reviews#0", "default/reviews#1"]
    assert rules[0]["matches"][0]["headers"] == [
        {"name": "end-user", "value": "jason", "type": "Exact"}
    ]
    assert [(b["cluster"], b["weight"]) for b in rules[1]["backends"]] == [
        ("reviews.default/v1", 90),
        ("reviews.default/v2", 10),
    ]
    assert rules[1]["timeout"] == 2.0
    assert rules[1]["retries"]["per_try_timeout"] == 0.5
    v1 = entries["endpoints/reviews.default/v1"].body["endpoints"]
    assert [e["address"] for e in v1] == ["198.18.0.1"]
    assert v1[0]["identity"] == "spiffe://cluster.local/ns/default/sa/reviews"
    assert entries["cluster/reviews.default/v2"].body["balancer"] == "LEAST_REQUEST"
    # Every entry is something a proxy accepts.
    for name, entry in entries.items():
        parse_entry(name, entry.body)


def test_a_snapshot_does_not_grow_with_the_mesh() -> None:
    small = mesh(REVIEWS_SPLIT)
    big = mesh(REVIEWS_SPLIT + "".join(service(f"svc-{i}") for i in range(300)))
    a = compile_snapshot(small, CALLER, ["reviews"])
    b = compile_snapshot(big, CALLER, ["reviews"])
    assert json.dumps({n: e.body for n, e in a.items()}, sort_keys=True) == json.dumps(
        {n: e.body for n, e in b.items()}, sort_keys=True
    )


def test_compiling_twice_gives_the_same_versions() -> None:
    state = mesh(REVIEWS_SPLIT)
    first = compile_snapshot(state, CALLER, ["reviews"])
    second = compile_snapshot(state, CALLER, ["reviews.default.svc.cluster.local", "reviews"])
    assert {n: e.version for n, e in first.items()} == {
        n: e.version for n, e in second.items() if n in first
    }


def test_a_name_that_resolves_to_nothing_says_so() -> None:
    entries = compile_snapshot(mesh(REVIEWS_SPLIT), CALLER, ["nope.elsewhere"])
    assert (
        "no Service named 'nope.elsewhere'" in entries["unresolved/nope.elsewhere"].body["reason"]
    )


def test_a_vip_resolves_to_its_service() -> None:
    state = mesh(service("ratings", extra="  vip: 198.19.0.7\n"))
    entries = compile_snapshot(state, CALLER, ["198.19.0.7:9080"])
    assert entries["route/ratings.default"].body["vip"] == "198.19.0.7"


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


def test_a_route_change_touches_only_its_service() -> None:
    state = mesh(REVIEWS_SPLIT + service("ratings"))
    route = state.get("HTTPRoute", "default", "reviews")
    assert topics_of_change(state, route, route) == {"service:reviews.default"}
    wl = state.get("Workload", "default", "reviews-v1-0")
    assert topics_of_change(state, None, wl) == {
        "workload:default/reviews-v1-0",
        "service:reviews.default",
    }
