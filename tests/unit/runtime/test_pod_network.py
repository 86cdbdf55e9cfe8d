"""Pod network plans: addresses handed out in order and taken back, names the kernel
accepts and the cleanup can recognise, interception rules and hosts files as text."""

from __future__ import annotations

import ipaddress

import pytest

from mycelium.runtime.pod_network import (
    POD_NETWORK,
    AddressesExhausted,
    AddressPool,
    hosts_file,
    plan_pod,
    pod_ruleset,
)


def test_pods_get_addresses_in_order_and_keep_them() -> None:
    pool = AddressPool(POD_NETWORK)
    assert str(pool.node) == "198.18.64.1"  # the bridge's
    first = pool.assign("reviews-v1-0")
    second = pool.assign("reviews-v2-0")
    assert (str(first), str(second)) == ("198.18.64.2", "198.18.64.3")
    assert pool.assign("reviews-v1-0") == first


def test_a_released_address_is_reused_last() -> None:
    pool = AddressPool(ipaddress.ip_network("198.18.64.0/29"))  # node + 5 pods
    names = [f"p{i}" for i in range(5)]
    addresses = [pool.assign(name) for name in names]
    pool.release("p0")
    assert pool.assign("late") == addresses[0]  # the only one free
    pool.release("p1")
    pool.release("late")
    assert pool.assign("next") == addresses[1]  # released earlier, handed out first
    pool.assign("the-last")
    with pytest.raises(AddressesExhausted, match=r"198\.18\.64\.0/29 has no address left"):
        pool.assign("one-too-many")


def test_a_plan_names_what_the_cleanup_will_recognise() -> None:
    plan = plan_pod("a1b2c3", "reviews-v2-0", 7, AddressPool(POD_NETWORK))
    assert plan.netns == "mycelium-a1b2c3-reviews-v2-0"
    assert plan.node_netns == "mycelium-a1b2c3-node"
    assert plan.host_interface == "mycv7"
    assert plan.prefix_length == 18
    with pytest.raises(ValueError, match="longer than the kernel allows"):
        _ = plan_pod("a1b2c3", "x", 10**12, AddressPool(POD_NETWORK)).host_interface


def test_the_ruleset_sends_tcp_through_the_sidecar_but_not_its_own() -> None:
    rules = pod_ruleset(controller=("198.18.64.1", 15012))
    assert 'iifname "eth0" meta l4proto tcp redirect to :15006' in rules
    assert 'iifname "eth0" tcp dport { 15000, 15021 } return' in rules
    assert "meta mark 0x539 return" in rules
    assert "ip daddr 198.18.64.1 tcp dport 15012 return" in rules
    # the exemptions come before the catch-all redirect
    assert rules.index("meta mark 0x539 return") < rules.index("redirect to :15001")


def test_a_pod_calling_its_own_service_goes_through_its_own_inbound() -> None:
    rules = pod_ruleset(controller=("127.0.0.1", 15012), pod_address="198.18.64.3")
    self_call = "meta mark 0x539 ip daddr 198.18.64.3 tcp dport != { 15000, 15021 } "
    assert self_call + "redirect to :15006" in rules
    # before the sidecar's own connections are let through untouched
    assert rules.index(self_call) < rules.index("meta mark 0x539 return")


def test_service_names_resolve_short_qualified_and_fully_qualified() -> None:
    text = hosts_file(
        [
            ("198.19.0.10", "reviews", "bookinfo"),
            ("198.19.0.11", "ratings", "bookinfo"),
            ("198.19.0.12", "reviews", "shop"),
        ]
    )
    lines = text.splitlines()
    assert "198.19.0.10\treviews reviews.bookinfo reviews.bookinfo.svc.cluster.local" in lines
    # a short name already taken stays with the first namespace
    assert "198.19.0.12\treviews.shop reviews.shop.svc.cluster.local" in lines
    assert lines[0] == "127.0.0.1\tlocalhost"


def test_an_external_service_resolves_by_its_extra_host_names() -> None:
    text = hosts_file([("198.19.0.20", "example-api", "shop", ("api.example.com",))])
    assert (
        "198.19.0.20\texample-api example-api.shop example-api.shop.svc.cluster.local "
        "api.example.com"
    ) in text.splitlines()
