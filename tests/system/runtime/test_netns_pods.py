"""netns pods made by the runtime: wired to the node's bridge, their TCP intercepted
both ways, service names resolved, and gone without a trace when removed or when a
crashed run is swept.

Two pods, a and b. Stand-ins for sidecars (plain sockets, in the pods' namespaces)
listen on 15001 in a and on 15006 in b: an app in a connecting to b's port 9080 must
land on a's 15001 with that original destination; a's "sidecar" connecting out with
its mark must reach b and land on b's 15006, again with the original destination.
The host's own interfaces are compared before and after: the runtime adds none.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from tests.support.netns import Namespace, host_interface_names

from mycelium.net.dial import set_mark
from mycelium.net.original_dst import original_destination
from mycelium.runtime import netns_pods
from mycelium.runtime.pod_network import (
    POD_NETWORK,
    PROXY_MARK,
    AddressPool,
    PodNetworkPlan,
    hosts_file,
    plan_pod,
    pod_ruleset,
    run_id,
    run_prefix,
)

pytestmark = pytest.mark.system

APP_PORT = 9080
HOSTS = hosts_file([("198.19.0.10", "reviews", "bookinfo")])
RUN = run_id(f"test-netns-pods-{os.getpid()}")  # this test's own, like a mesh home's


@pytest.fixture
def pods() -> Iterator[tuple[PodNetworkPlan, PodNetworkPlan]]:
    try:
        netns_pods.check_available()
    except netns_pods.NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    before = host_interface_names()
    pool = AddressPool(POD_NETWORK)
    a, b = plan_pod(RUN, "test-a", 1, pool), plan_pod(RUN, "test-b", 2, pool)
    netns_pods.ensure_node(RUN, str(pool.node), pool.network.prefixlen)
    rules = pod_ruleset(controller=(str(pool.node), 15012))
    try:
        for plan in (a, b):
            netns_pods.create_pod(plan, rules, HOSTS)
        yield a, b
    finally:
        for plan in (a, b):
            netns_pods.remove_pod(plan.netns)
        netns_pods.remove_node(RUN)
    assert not [n for n in netns_pods.namespace_names() if n.startswith(run_prefix(RUN))]
    assert host_interface_names() == before, "the runtime touched the host's interfaces"


def accept_one(server: socket.socket, seen: list[tuple[str, int]]) -> threading.Thread:
    def run() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(original_destination(conn))
            conn.sendall(b"ok")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def connect(address: str, port: int, mark: int | None) -> bytes:
    """Run in a pod: a connection out, as an app (no mark) or as the sidecar (marked)."""
    with socket.socket() as sock:
        sock.settimeout(10)
        if mark is not None:
            set_mark(sock, mark)
        sock.connect((address, port))
        return sock.recv(16)


def test_pod_tcp_goes_through_the_sidecars_both_ways(
    pods: tuple[PodNetworkPlan, PodNetworkPlan],
) -> None:
    a, b = pods
    in_a, in_b = Namespace(a.netns), Namespace(b.netns)
    outbound = in_a.call(socket.create_server, ("127.0.0.1", 15001))
    inbound = in_b.call(socket.create_server, ("0.0.0.0", 15006))
    seen_out: list[tuple[str, int]] = []
    seen_in: list[tuple[str, int]] = []
    try:
        waiting = accept_one(outbound, seen_out)
        assert in_a.call(connect, str(b.address), APP_PORT, None) == b"ok"
        waiting.join(10)
        assert seen_out == [(str(b.address), APP_PORT)]  # the app's call reached a's sidecar

        waiting = accept_one(inbound, seen_in)
        assert in_a.call(connect, str(b.address), APP_PORT, PROXY_MARK) == b"ok"
        waiting.join(10)
        assert seen_in == [(str(b.address), APP_PORT)]  # and b's sidecar took it in
    finally:
        outbound.close()
        inbound.close()


def test_service_names_resolve_inside_a_pod(
    pods: tuple[PodNetworkPlan, PodNetworkPlan],
) -> None:
    a, _ = pods
    answer = netns_pods.run_in(a.netns, "getent", "hosts", "reviews.bookinfo")
    assert answer.split()[0] == "198.19.0.10"


def test_what_a_crashed_run_left_is_swept() -> None:
    try:
        netns_pods.check_available()
    except netns_pods.NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    before = host_interface_names()
    pool = AddressPool(POD_NETWORK)
    netns_pods.ensure_node(RUN, str(pool.node), pool.network.prefixlen)
    netns_pods.create_pod(
        plan_pod(RUN, "crashed", 1, pool), pod_ruleset(controller=(str(pool.node), 15012)), HOSTS
    )
    # ...and the run dies here, without removing anything.

    swept = netns_pods.sweep_leftovers(RUN)

    assert swept == [f"mycelium-{RUN}-crashed", f"mycelium-{RUN}-node"]
    assert not [n for n in netns_pods.namespace_names() if n.startswith(run_prefix(RUN))]
    assert not list(netns_pods.NETNS_ETC_DIR.glob(f"{run_prefix(RUN)}*"))
    assert host_interface_names() == before
