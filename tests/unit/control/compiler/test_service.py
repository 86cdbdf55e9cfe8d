"""The service bundle as data in, data out: resources and registered workloads in, a
caller's route, clusters and endpoints out."""

from __future__ import annotations

import json

from tests.support.compiler_meshes import CALLER, REVIEWS_SPLIT, mesh, service

from mycelium.control.compiler.roles import compile_snapshot
from mycelium.discovery.config import parse_entry


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
