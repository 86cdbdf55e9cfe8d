"""Service vip allocation as data in, data out: the batch, what the store holds, and the
claims in; the Services with their addresses and the claim writes out."""

from __future__ import annotations

import ipaddress

import pytest

from mycelium.api.errors import ResourceValidationError
from mycelium.api.loading import load_documents
from mycelium.api.service import Service
from mycelium.control.vips import (
    SERVICE_VIP_NETWORK,
    Claim,
    VipsExhausted,
    claim_key,
    free_vip,
    plan_vips,
)
from mycelium.store import Compare, Delete, Put


def service(name: str, vip: str | None = None) -> Service:
    extra = f"\n  vip: {vip}" if vip else ""
    text = f"""apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]{extra}
"""
    (resource,) = load_documents(text, source="svc.yaml")
    assert isinstance(resource, Service)
    return resource


def key(name: str) -> str:
    return f"/mycelium/service/default/{name}"


def at_zero() -> int:
    return 0


# --- free_vip ---------------------------------------------------------------------------


def test_the_range_lies_inside_the_benchmarking_range_and_apart_from_pods() -> None:
    assert SERVICE_VIP_NETWORK.subnet_of(ipaddress.IPv4Network("198.18.0.0/15"))
    assert not SERVICE_VIP_NETWORK.overlaps(ipaddress.IPv4Network("198.18.64.0/18"))


def test_the_first_free_host_from_the_start_is_picked() -> None:
    assert free_vip(set()) == "198.19.0.1"
    assert free_vip({"198.19.0.1", "198.19.0.2"}) == "198.19.0.3"
    assert free_vip(set(), start=9) == "198.19.0.10"


def test_the_search_wraps_around_and_never_hands_out_network_or_broadcast() -> None:
    network = ipaddress.IPv4Network("198.19.0.0/29")  # hosts .1 to .6

    assert free_vip({"198.19.0.6"}, start=5, network=network) == "198.19.0.1"
    handed = {free_vip(set(), start=i, network=network) for i in range(20)}
    assert handed == {f"198.19.0.{i}" for i in range(1, 7)}


def test_a_full_range_is_an_error_that_says_what_to_do() -> None:
    network = ipaddress.IPv4Network("198.19.0.0/30")

    with pytest.raises(VipsExhausted, match="delete unused Services"):
        free_vip({"198.19.0.1", "198.19.0.2"}, network=network)


# --- plan_vips --------------------------------------------------------------------------


def test_a_new_service_without_vip_gets_a_free_one_and_claims_it() -> None:
    claims = {"198.19.0.1": Claim(key("other"), 7)}

    plan = plan_vips([service("a")], {}, claims, at_zero)

    assert plan.services[key("a")].spec.vip == "198.19.0.2"
    assert plan.compares == [Compare(claim_key("198.19.0.2"), 0)]
    assert plan.ops == [Put(claim_key("198.19.0.2"), key("a").encode())]


def test_reapplying_without_vip_keeps_the_stored_one_and_writes_no_claim() -> None:
    claims = {"198.19.0.40": Claim(key("a"), 3)}

    plan = plan_vips([service("a")], {key("a"): "198.19.0.40"}, claims, at_zero)

    assert plan.services[key("a")].spec.vip == "198.19.0.40"
    assert (plan.compares, plan.ops) == ([], [])


def test_a_user_vip_is_kept_even_outside_the_range() -> None:
    plan = plan_vips([service("a", "10.0.0.5")], {}, {}, at_zero)

    assert plan.services[key("a")].spec.vip == "10.0.0.5"
    assert plan.ops == [Put(claim_key("10.0.0.5"), key("a").encode())]


def test_a_vip_held_by_another_service_is_refused_naming_it() -> None:
    claims = {"198.19.0.9": Claim(key("ratings"), 4)}

    with pytest.raises(ResourceValidationError) as caught:
        plan_vips([service("a", "198.19.0.9")], {}, claims, at_zero)

    (issue,) = caught.value.issues
    assert issue.path == "spec.vip"
    assert issue.source == "svc.yaml"
    assert issue.resource == "Service/default/a"
    assert "198.19.0.9 is already the vip of Service/default/ratings" in issue.message


def test_two_services_of_one_batch_cannot_share_a_vip() -> None:
    with pytest.raises(ResourceValidationError, match="already the vip of Service/default/a"):
        plan_vips([service("a", "198.19.0.9"), service("b", "198.19.0.9")], {}, {}, at_zero)


def test_changing_the_vip_moves_the_claim() -> None:
    claims = {"198.19.0.1": Claim(key("a"), 5)}

    plan = plan_vips([service("a", "198.19.0.2")], {key("a"): "198.19.0.1"}, claims, at_zero)

    assert sorted(plan.ops, key=str) == sorted(
        [Delete(claim_key("198.19.0.1")), Put(claim_key("198.19.0.2"), key("a").encode())],
        key=str,
    )
    assert Compare(claim_key("198.19.0.1"), 5) in plan.compares
    assert Compare(claim_key("198.19.0.2"), 0) in plan.compares


def test_a_vip_released_in_the_batch_may_be_taken_by_another_of_the_batch() -> None:
    claims = {"198.19.0.1": Claim(key("a"), 5)}

    plan = plan_vips(
        [service("a", "198.19.0.2"), service("b", "198.19.0.1")],
        {key("a"): "198.19.0.1"},
        claims,
        at_zero,
    )

    assert plan.services[key("b")].spec.vip == "198.19.0.1"
    assert Put(claim_key("198.19.0.1"), key("b").encode()) in plan.ops
    assert len({op.key for op in plan.ops}) == len(plan.ops)  # no key written twice


def test_allocation_in_a_batch_skips_addresses_the_batch_claims_or_releases() -> None:
    claims = {"198.19.0.1": Claim(key("a"), 5)}

    plan = plan_vips(
        [service("a", "198.19.0.2"), service("b"), service("c")],
        {key("a"): "198.19.0.1"},
        claims,
        at_zero,
    )

    assert plan.services[key("b")].spec.vip == "198.19.0.3"
    assert plan.services[key("c")].spec.vip == "198.19.0.4"


def test_a_stored_vip_without_its_claim_is_claimed() -> None:
    plan = plan_vips([service("a")], {key("a"): "198.19.0.8"}, {}, at_zero)

    assert plan.services[key("a")].spec.vip == "198.19.0.8"
    assert plan.ops == [Put(claim_key("198.19.0.8"), key("a").encode())]


def test_the_filled_in_service_keeps_where_it_was_read_from() -> None:
    plan = plan_vips([service("a")], {}, {}, at_zero)

    assert plan.services[key("a")].origin is not None
