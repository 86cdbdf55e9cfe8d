"""The controller on a real 3-member etcd cluster: config flows to proxies, workloads
live by their leases, and losing the etcd leader mid-way changes nothing for users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tests.support.controller import Api, Mesh, controller_config
from tests.support.etcd import EtcdCluster
from tests.support.polling import eventually

from mycelium.control.controller import Controller

pytestmark = pytest.mark.system

SERVICE = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: default}
spec:
  parentRefs: [{name: ratings}]
  rules: [{backendRefs: [{name: ratings}], timeout: %s}]
"""


@pytest.fixture
async def etcd_mesh(tmp_path: Path) -> AsyncIterator[tuple[Mesh, EtcdCluster]]:
    cluster = EtcdCluster.start(3)
    controller = Controller(controller_config(tmp_path / "home", store_url=cluster.url))
    await controller.start()
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
            mesh = Mesh(controller, api, tmp_path / "home", [])
            try:
                yield mesh, cluster
            finally:
                for client in mesh.clients:
                    await client.stop()
    finally:
        await controller.stop()
        cluster.stop()


def timeout_of(snapshot: dict) -> float:  # type: ignore[type-arg]
    return float(snapshot["route/ratings.default"].body["http_rules"][0]["timeout"])


async def test_config_and_registry_survive_the_loss_of_the_etcd_leader(
    etcd_mesh: tuple[Mesh, EtcdCluster],
) -> None:
    mesh, cluster = etcd_mesh
    status, body = await mesh.api.apply(SERVICE % "1s")
    assert status == 200, body
    assert (await mesh.api.call("GET", "/version"))[1]["store"] == "etcd"

    ratings = mesh.client(
        "ratings-0",
        workload="ratings-0",
        labels={"app": "ratings"},
        address="198.18.0.31",
        ports=[9080],
    )
    caller = mesh.client("reviews-0", subscriptions=["ratings"])
    await ratings.start()
    await caller.start()
    await caller.wait_for(
        lambda s: len(s.get("endpoints/ratings.default", _EMPTY).body["endpoints"]) == 1, 15
    )
    assert timeout_of(caller.snapshot) == 1.0

    cluster.kill(cluster.leader_index())

    status, body = await mesh.api.apply(SERVICE % "3s")
    assert status == 200, body
    await caller.wait_for(lambda s: timeout_of(s) == 3.0, 20)

    # The workload's lease lives in etcd: it outlives the killed leader while heartbeats
    # go on, and expires once they stop (TTL 1.5 s, rounded up to etcd's 2 s).
    status, _ = await mesh.api.call("GET", "/api/v1/resources/Workload/default/ratings-0")
    assert status == 200
    await ratings.stop(leave=False)  # as if it crashed: only the lease can remove it
    await caller.wait_for(lambda s: s["endpoints/ratings.default"].body["endpoints"] == [], 20)

    async def gone() -> bool:
        status, _ = await mesh.api.call("GET", "/api/v1/resources/Workload/default/ratings-0")
        return status == 404

    await eventually(gone, timeout=10)


_EMPTY = type("Empty", (), {"body": {"endpoints": []}})()
