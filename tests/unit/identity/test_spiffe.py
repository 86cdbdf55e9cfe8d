"""Mesh SPIFFE IDs: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>."""

from __future__ import annotations

import pytest
from spiffe import SpiffeId as ReferenceSpiffeId

from mycelium.identity.spiffe import SpiffeId, SpiffeIdError


def test_an_id_reads_and_writes_back_the_same() -> None:
    uri = "spiffe://cluster.local/ns/shop/sa/reviews"
    identity = SpiffeId.parse(uri)
    assert identity == SpiffeId("cluster.local", "shop", "reviews")
    assert identity.uri == uri
    # an independent implementation agrees on the parts
    reference = ReferenceSpiffeId(uri)
    assert str(reference.trust_domain) == identity.trust_domain
    assert reference.path == "/ns/shop/sa/reviews"


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("https://cluster.local/ns/a/sa/b", "must start with spiffe://"),
        ("spiffe://cluster.local/a/b", "/ns/<namespace>/sa/<name>"),
        ("spiffe://cluster.local/ns/a/sa/b/extra", "/ns/<namespace>/sa/<name>"),
        ("spiffe://cluster.local/ns/Shop/sa/b", "namespace 'Shop'"),
        ("spiffe://cluster.local/ns/a/sa/", "service account ''"),
        ("spiffe://Cluster.Local/ns/a/sa/b", "trust domain"),
    ],
)
def test_anything_else_is_refused_with_what_is_wrong(uri: str, complaint: str) -> None:
    with pytest.raises(SpiffeIdError, match=complaint):
        SpiffeId.parse(uri)
