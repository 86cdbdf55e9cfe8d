"""Cross-references: a batch may only point at what it defines or what the store holds."""

from __future__ import annotations

from collections.abc import Iterable

from mycelium.api import DestinationPolicy, Resource
from mycelium.api.gateway import Gateway
from mycelium.api.references import check_references

from .conftest import load

HEADER = "apiVersion: mycelium.io/v1\n"


def service(name: str, namespace: str = "bookinfo") -> str:
    return (
        f"{HEADER}kind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec: {ports: [{name: http, port: 9080}]}\n"
    )


def policy(host: str, subsets: Iterable[str], name: str = "reviews") -> str:
    listed = ", ".join(f"{{name: {s}, labels: {{version: {s}}}}}" for s in subsets)
    return (
        f"{HEADER}kind: DestinationPolicy\nmetadata: {{name: {name}, namespace: bookinfo}}\n"
        f"spec: {{host: {host}, subsets: [{listed}]}}\n"
    )


def http_route(backends: str, *, parent: str = "{name: reviews}", extra: str = "") -> str:
    return (
        f"{HEADER}kind: HTTPRoute\nmetadata: {{name: reviews, namespace: bookinfo}}\n"
        f"spec: {{parentRefs: [{parent}], rules: [{{backendRefs: {backends}{extra}}}]}}\n"
    )


def batch(*documents: str) -> list[Resource]:
    return load("---\n".join(documents), source="apply.yaml")


class Store:
    """What the store already holds, answering `exists` like the controller will."""

    def __init__(self, *documents: str) -> None:
        self.resources = batch(*documents) if documents else []

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        return any(
            (r.kind, r.metadata.namespace, r.metadata.name) == (kind, namespace, name)
            for r in self.resources
        )

    def policies(self) -> list[DestinationPolicy]:
        return [r for r in self.resources if isinstance(r, DestinationPolicy)]

    def gateways(self) -> list[Gateway]:
        return [r for r in self.resources if isinstance(r, Gateway)]


def problems(resources: list[Resource], store: Store | None = None) -> list[str]:
    store = store or Store()
    issues = check_references(resources, store.exists, store.policies(), store.gateways())
    return [f"{i.resource} {i.path}: {i.message}" for i in issues]


def test_a_route_to_services_of_the_same_batch_is_fine() -> None:
    assert problems(batch(service("reviews"), http_route("[{name: reviews}]"))) == []


def test_a_route_to_a_service_already_stored_is_fine() -> None:
    store = Store(service("reviews"))
    assert problems(batch(http_route("[{name: reviews}]")), store) == []


def test_a_backend_that_exists_nowhere_is_reported_where_it_is_written() -> None:
    resources = batch(service("reviews"), http_route("[{name: reviews}, {name: reveiws}]"))
    issues = check_references(resources, Store().exists)
    [issue] = issues
    # the route's spec is one flow mapping on the 4th line of the 2nd document
    assert (issue.source, issue.document, issue.line) == ("apply.yaml", 2, 9)
    assert issue.resource == "HTTPRoute/bookinfo/reviews"
    assert issue.path == "spec.rules[0].backendRefs[1].name"
    assert "Service bookinfo/reveiws does not exist" in issue.message


def test_a_backend_in_another_namespace_is_looked_up_there() -> None:
    resources = batch(service("reviews"), http_route("[{name: reviews, namespace: shop}]"))
    assert problems(resources) == [
        "HTTPRoute/bookinfo/reviews spec.rules[0].backendRefs[0].name: Service shop/reviews "
        "does not exist: apply it together with this HTTPRoute or before it, or fix the name"
    ]
    store = Store(service("reviews", namespace="shop"))
    assert problems(resources, store) == []


def test_a_missing_parent_service_or_gateway_is_reported() -> None:
    route = http_route("[{name: reviews}]", parent="{kind: Gateway, name: edge}")
    [problem] = problems(batch(service("reviews"), route))
    assert problem.startswith("HTTPRoute/bookinfo/reviews spec.parentRefs[0].name: Gateway")
    [problem] = problems(batch(http_route("[]", extra=", fault: {abort: {httpStatus: 503}}")))
    assert "spec.parentRefs[0].name: Service bookinfo/reviews does not exist" in problem


GATEWAY = (
    f"{HEADER}kind: Gateway\nmetadata: {{name: edge, namespace: bookinfo}}\n"
    "spec: {selector: {app: edge}, listeners: [{name: web, port: 8080, protocol: HTTP}]}\n"
)


def test_a_gateway_parent_with_a_port_needs_a_listener_on_it() -> None:
    on_port = http_route("[{name: reviews}]", parent="{kind: Gateway, name: edge, port: 8080}")
    wrong = http_route("[{name: reviews}]", parent="{kind: Gateway, name: edge, port: 80}")
    assert problems(batch(service("reviews"), GATEWAY, on_port)) == []
    assert problems(batch(service("reviews"), on_port), Store(GATEWAY)) == []
    expected = [
        "HTTPRoute/bookinfo/reviews spec.parentRefs[0].port: Gateway bookinfo/edge has no "
        "listener on port 80 (its ports: 8080): fix the port, or remove it to attach to "
        "every listener"
    ]
    assert problems(batch(service("reviews"), GATEWAY, wrong)) == expected
    assert problems(batch(service("reviews"), wrong), Store(GATEWAY)) == expected


def test_a_subset_must_be_defined_by_a_destination_policy() -> None:
    route = http_route("[{name: reviews, subset: v1, weight: 90}, {name: reviews, subset: v4}]")
    [problem] = problems(batch(service("reviews"), policy("reviews", ["v1", "v2"]), route))
    assert "spec.rules[0].backendRefs[1].subset" in problem
    assert "subset 'v4' of Service bookinfo/reviews is not defined" in problem
    assert "defines only: v1, v2" in problem


def test_a_subset_without_any_policy_says_so() -> None:
    route = http_route("[{name: reviews, subset: v1}]")
    [problem] = problems(batch(service("reviews"), route))
    assert "no DestinationPolicy exists for it" in problem


def test_subsets_of_a_stored_policy_count() -> None:
    store = Store(service("reviews"), policy("reviews.bookinfo", ["v1", "v2", "v3"]))
    route = http_route("[{name: reviews, subset: v3}]")
    assert problems(batch(route), store) == []


def test_a_policy_in_the_batch_replaces_the_stored_one() -> None:
    store = Store(service("reviews"), policy("reviews", ["v1", "v2", "v3"]))
    shrunk = policy("reviews", ["v1"])
    route = http_route("[{name: reviews, subset: v3}]")
    [problem] = problems(batch(shrunk, route), store)
    assert "defines only: v1" in problem


def test_a_mirror_target_is_checked_like_a_backend() -> None:
    route = http_route("[{name: reviews}]", extra=", mirror: {backendRef: {name: reviews-shadow}}")
    [problem] = problems(batch(service("reviews"), route))
    assert "spec.rules[0].mirror.backendRef.name: Service bookinfo/reviews-shadow" in problem


def test_tcp_routes_are_checked_too() -> None:
    route = (
        f"{HEADER}kind: TCPRoute\nmetadata: {{name: mysql, namespace: bookinfo}}\n"
        "spec: {parentRefs: [{name: mysql}], rules: [{backendRefs: [{name: mysql, subset: v2}]}]}\n"
    )
    found = problems(batch(service("mysql"), route))
    assert found == [
        "TCPRoute/bookinfo/mysql spec.rules[0].backendRefs[0].subset: subset 'v2' of Service "
        "bookinfo/mysql is not defined (no DestinationPolicy exists for it): add it to the "
        "DestinationPolicy's subsets, or fix the name"
    ]


def test_a_rate_limit_targets_an_existing_service_or_route() -> None:
    def limit(kind: str, name: str) -> str:
        return (
            f"{HEADER}kind: RateLimitPolicy\nmetadata: {{name: limit, namespace: bookinfo}}\n"
            f"spec: {{targetRef: {{kind: {kind}, name: {name}}}, "
            "limit: {requests: 10, per: 1s}}\n"
        )

    assert problems(batch(service("ratings"), limit("Service", "ratings"))) == []
    [problem] = problems(batch(service("ratings"), limit("HTTPRoute", "ratings")))
    assert "spec.targetRef.name: HTTPRoute bookinfo/ratings does not exist" in problem
