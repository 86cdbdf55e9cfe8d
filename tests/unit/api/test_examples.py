"""The shipped examples and the examples in docs/resources.md load and hold together."""

from __future__ import annotations

import re

from mycelium.api import (
    KINDS,
    AuthorizationPolicy,
    DestinationPolicy,
    HTTPRoute,
    PeerAuthentication,
    Resource,
)
from mycelium.api.loading import load_documents, load_file
from mycelium.api.references import check_references

from .conftest import REPO_ROOT

BOOKINFO = REPO_ROOT / "examples" / "resources" / "bookinfo.yaml"
RESOURCES_DOC = REPO_ROOT / "docs" / "resources.md"
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def by_ref(resources: list[Resource]) -> dict[str, Resource]:
    return {resource.ref: resource for resource in resources}


def test_bookinfo_loads_cleanly_and_references_only_itself() -> None:
    resources = load_file(BOOKINFO)
    assert check_references(resources, lambda kind, namespace, name: False) == []
    found = by_ref(resources)
    assert set(found) == {
        "Namespace/bookinfo",
        "Service/bookinfo/productpage",
        "Service/bookinfo/details",
        "Service/bookinfo/reviews",
        "Service/bookinfo/ratings",
        "DestinationPolicy/bookinfo/reviews",
        "HTTPRoute/bookinfo/reviews",
        "PeerAuthentication/bookinfo/default",
        "AuthorizationPolicy/bookinfo/reviews-viewers",
        "RateLimitPolicy/bookinfo/ratings",
    }


def test_bookinfo_splits_reviews_90_10_between_v1_and_v2() -> None:
    found = by_ref(load_file(BOOKINFO))
    policy = found["DestinationPolicy/bookinfo/reviews"]
    assert isinstance(policy, DestinationPolicy)
    assert [subset.name for subset in policy.spec.subsets] == ["v1", "v2", "v3"]
    route = found["HTTPRoute/bookinfo/reviews"]
    assert isinstance(route, HTTPRoute)
    [rule] = route.spec.rules
    assert [(ref.subset, ref.weight) for ref in rule.backend_refs] == [("v1", 90), ("v2", 10)]


def test_bookinfo_is_strict_and_lets_only_productpage_read_reviews() -> None:
    found = by_ref(load_file(BOOKINFO))
    peer = found["PeerAuthentication/bookinfo/default"]
    assert isinstance(peer, PeerAuthentication)
    assert peer.spec.selector is None
    assert peer.spec.mtls.mode == "STRICT"
    authz = found["AuthorizationPolicy/bookinfo/reviews-viewers"]
    assert isinstance(authz, AuthorizationPolicy)
    assert authz.spec.action == "ALLOW"
    [rule] = authz.spec.rules
    [peer_from] = rule.from_
    assert peer_from.source.principals == ["cluster.local/ns/bookinfo/sa/bookinfo-productpage"]


def test_every_example_in_the_resource_reference_loads() -> None:
    blocks = YAML_BLOCK.findall(RESOURCES_DOC.read_text(encoding="utf-8"))
    resources: list[Resource] = []
    for number, block in enumerate(blocks, start=1):
        resources += load_documents(block, source=f"resources.md block {number}")
    assert {resource.kind for resource in resources} == set(KINDS)
    # Taken together, with bookinfo.yaml already applied, they reference nothing missing.
    stored = by_ref(load_file(BOOKINFO))

    def exists(kind: str, namespace: str, name: str) -> bool:
        return any(
            (r.kind, r.metadata.namespace, r.metadata.name) == (kind, namespace, name)
            for r in stored.values()
        )

    policies = [r for r in stored.values() if isinstance(r, DestinationPolicy)]
    assert check_references(resources, exists, policies) == []
