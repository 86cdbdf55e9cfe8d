"""The columns of `myc get` per kind, read from resources as the controller serves them."""

from __future__ import annotations

from typing import Any

from mycelium.cli.columns import NONE, table_columns, table_rows


def resource(kind: str, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mycelium.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "revision": 17, **metadata},
        "spec": spec,
    }


def table(kind: str, docs: list[dict[str, Any]], **options: bool) -> list[dict[str, str]]:
    columns = table_columns(
        kind, all_namespaces=options.get("all_namespaces", False), wide=options.get("wide", False)
    )
    return [
        dict(zip([c.header for c in columns], row, strict=True))
        for row in table_rows(docs, columns)
    ]


SERVICE = resource(
    "Service",
    "reviews",
    {
        "selector": {"app": "reviews", "tier": "backend"},
        "ports": [
            {"name": "http", "port": 9080, "targetPort": 9080, "protocol": "HTTP"},
            {"name": "grpc", "port": 9090, "targetPort": 19090, "protocol": "GRPC"},
        ],
        "vip": "198.19.0.7",
        "hosts": [],
    },
)


def test_a_service_shows_ports_and_selector() -> None:
    assert table("Service", [SERVICE]) == [
        {
            "NAME": "reviews",
            "VIP": "198.19.0.7",
            "PORTS": "9080/HTTP,9090:19090/GRPC",
            "SELECTOR": "app=reviews,tier=backend",
            "REVISION": "17",
        }
    ]


def test_all_namespaces_adds_the_namespace_after_the_name() -> None:
    columns = table_columns("Service", all_namespaces=True, wide=False)

    assert [c.header for c in columns][:2] == ["NAME", "NAMESPACE"]
    assert table("Service", [SERVICE], all_namespaces=True)[0]["NAMESPACE"] == "default"


def test_wide_adds_the_kind_extras_and_labels() -> None:
    (row,) = table("Service", [SERVICE], wide=True)

    assert list(row) == ["NAME", "VIP", "PORTS", "SELECTOR", "HOSTS", "REVISION", "LABELS"]
    assert row["HOSTS"] == NONE
    assert row["LABELS"] == NONE


def test_a_route_shows_its_parents_and_how_traffic_is_split() -> None:
    route = resource(
        "HTTPRoute",
        "reviews",
        {
            "parentRefs": [
                {"kind": "Service", "name": "reviews", "namespace": None, "port": None},
                {"kind": "Gateway", "name": "edge", "namespace": "infra", "port": 443},
            ],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "reviews", "subset": "v1", "port": 9080, "weight": 90},
                        {"name": "reviews", "subset": "v2", "port": 9080, "weight": 10},
                    ]
                },
                {"backendRefs": [{"name": "ratings", "namespace": "shop", "weight": 1}]},
            ],
        },
    )

    (row,) = table("HTTPRoute", [route])

    assert row["PARENTS"] == "reviews,Gateway/edge.infra:443"
    # One form for every backend: its share of its rule, the rules apart.
    assert row["BACKENDS"] == "reviews/v1:9080(90%),reviews/v2:9080(10%);ratings.shop(100%)"


def test_a_zero_weight_and_an_unweighted_backend_read_as_shares_too() -> None:
    route = resource(
        "HTTPRoute",
        "reviews",
        {
            "parentRefs": [{"kind": "Service", "name": "reviews"}],
            "rules": [
                {"backendRefs": [{"name": "reviews", "subset": "v1"}]},
                {
                    "backendRefs": [
                        {"name": "reviews", "subset": "v2", "weight": 0},
                        {"name": "reviews", "subset": "v3", "weight": 100},
                    ]
                },
            ],
        },
    )

    (row,) = table("HTTPRoute", [route])

    assert row["BACKENDS"] == "reviews/v1(100%);reviews/v2(0%),reviews/v3(100%)"


def test_a_workload_shows_where_it_is_and_who_it_is() -> None:
    workload = resource(
        "Workload",
        "reviews-v1-a",
        {"address": "127.0.10.4", "serviceAccount": "reviews", "healthy": False, "weight": 1},
        labels={"version": "v1", "app": "reviews"},
    )

    (row,) = table("Workload", [workload], wide=True)

    assert row == {
        "NAME": "reviews-v1-a",
        "ADDRESS": "127.0.10.4",
        "SERVICE-ACCOUNT": "reviews",
        "LABELS": "app=reviews,version=v1",
        "WEIGHT": "1",
        "HEALTHY": "false",
        "REVISION": "17",
    }


def test_a_policy_without_selector_applies_to_every_workload() -> None:
    policy = resource("PeerAuthentication", "strict", {"mtls": {"mode": "STRICT"}})

    (row,) = table("PeerAuthentication", [policy])

    assert row["MODE"] == "STRICT"
    assert row["SELECTOR"] == "<all>"


def test_missing_fields_show_as_none_rather_than_failing() -> None:
    newer = {"kind": "HTTPRoute", "metadata": {"name": "odd"}, "spec": {"rules": "unexpected"}}

    (row,) = table("HTTPRoute", [newer], all_namespaces=True)

    assert row == {
        "NAME": "odd",
        "NAMESPACE": NONE,
        "PARENTS": NONE,
        "BACKENDS": NONE,
        "REVISION": NONE,
    }


def test_a_kind_without_own_columns_still_has_name_and_revision() -> None:
    assert [c.header for c in table_columns("Unheard", all_namespaces=False, wide=False)] == [
        "NAME",
        "REVISION",
    ]
