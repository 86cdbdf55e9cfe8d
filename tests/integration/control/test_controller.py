"""The controller end to end on loopback: REST API, registry, compiler and discovery,
with real TLS streams and the real embedded store."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
from dataclasses import replace
from pathlib import Path

import aiohttp
from tests.support.controller import Mesh
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery import protocol as p
from mycelium.discovery.client import ControllerAddress, DiscoveryClient, Snapshot

SERVICES = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

ROUTE = """---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - backendRefs:
    - {name: reviews, subset: v1, weight: %d}
    - {name: reviews, subset: v2, weight: %d}
"""


def weights(snapshot: Snapshot) -> list[int]:
    rules = snapshot["route/reviews.default"].body["http_rules"]
    return [b["weight"] for b in rules[0]["backends"]]


async def test_the_admin_token_is_private_and_required(mesh: Mesh) -> None:
    token_file = mesh.home / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    async with aiohttp.ClientSession() as session:
        async with session.get(mesh.api.base + "/api/v1/resources") as response:
            assert response.status == 401
            assert "admin token" in (await response.json())["message"]
        bad = {"Authorization": "Bearer not-the-token"}
        async with session.get(mesh.api.base + "/api/v1/resources", headers=bad) as response:
            assert response.status == 401


async def test_apply_get_list_and_delete(mesh: Mesh) -> None:
    status, body = await mesh.api.apply(SERVICES)
    assert status == 200, body
    assert [r["action"] for r in body["results"]] == ["created"] * 3

    status, again = await mesh.api.apply(SERVICES)
    assert [r["action"] for r in again["results"]] == ["unchanged"] * 3
    assert again["revision"] == body["revision"]

    status, svc = await mesh.api.call("GET", "/api/v1/resources/svc/default/reviews")
    assert status == 200
    assert svc["spec"]["ports"][0]["port"] == 9080
    assert svc["metadata"]["revision"] > 0

    status, listing = await mesh.api.call(
        "GET", "/api/v1/resources?kind=services&namespace=default"
    )
    assert sorted(i["metadata"]["name"] for i in listing["items"]) == ["ratings", "reviews"]

    status, _ = await mesh.api.call("DELETE", "/api/v1/resources/Service/default/ratings")
    assert status == 200
    status, missing = await mesh.api.call("GET", "/api/v1/resources/Service/default/ratings")
    assert status == 404
    assert missing["error"] == "not_found"
    assert 'Service "ratings" not found' in missing["message"]


async def test_an_invalid_file_is_refused_whole_and_nothing_is_written(mesh: Mesh) -> None:
    broken = SERVICES + ROUTE % (-1, 1)  # a negative weight in the last document
    status, body = await mesh.api.apply(broken, name="bookinfo.yaml")
    assert status == 422
    detail = body["details"][0]
    assert detail["source"] == "bookinfo.yaml"
    assert detail["document"] == 4
    assert "weight" in detail["path"]
    _, listing = await mesh.api.call("GET", "/api/v1/resources")
    assert listing["items"] == []


async def test_a_route_to_a_missing_service_is_an_error(mesh: Mesh) -> None:
    status, body = await mesh.api.apply(ROUTE % (90, 10))
    assert status == 422
    assert any("reviews" in d["message"] for d in body["details"])


async def test_watch_streams_changes_in_order(mesh: Mesh) -> None:
    _, first = await mesh.api.apply(SERVICES)
    headers = {"Authorization": f"Bearer {mesh.api.token}"}
    url = mesh.api.base + f"/api/v1/watch?kind=HTTPRoute&fromRevision={first['revision']}"
    async with mesh.api.session.get(url, headers=headers) as response:
        await mesh.api.apply(SERVICES + ROUTE % (90, 10))
        await mesh.api.apply(SERVICES + ROUTE % (50, 50))
        await mesh.api.call("DELETE", "/api/v1/resources/HTTPRoute/default/reviews")
        events = []
        while len(events) < 3:
            line = await asyncio.wait_for(response.content.readline(), 10)
            events.append(json.loads(line))
    assert [e["type"] for e in events] == ["put", "put", "delete"]
    assert [e["name"] for e in events] == ["reviews"] * 3
    assert events[0]["resource"]["spec"]["rules"][0]["backendRefs"][0]["weight"] == 90
    revisions = [e["revision"] for e in events]
    assert revisions == sorted(revisions)


async def test_a_proxy_gets_only_what_it_subscribed_to_and_every_change(mesh: Mesh) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (90, 10))
    reviews_v1 = mesh.client(
        "reviews-v1-0",
        workload="reviews-v1-0",
        labels={"app": "reviews", "version": "v1"},
        address="198.18.0.11",
        ports=[9080],
    )
    caller = mesh.client("productpage-0", subscriptions=["reviews"])
    await reviews_v1.start()
    await caller.start()

    snapshot = await caller.wait_for(
        lambda s: any(
            e["address"] == "198.18.0.11"
            for e in s.get("endpoints/reviews.default/v1", _EMPTY).body["endpoints"]
        ),
        timeout=10,
    )
    assert weights(snapshot) == [90, 10]
    # Only reviews: nothing about ratings, which this proxy never asked for.
    assert not any("ratings" in name for name in snapshot)
    assert {"inbound", "route/reviews.default", "cluster/reviews.default/v1"} <= set(snapshot)

    # The registered workload is visible through the API, registered by its proxy.
    _, wl = await mesh.api.call("GET", "/api/v1/resources/Workload/default/reviews-v1-0")
    assert wl["spec"]["address"] == "198.18.0.11"

    # A traffic shift reaches the proxy as a delta holding just the route.
    before = dict(caller.snapshot)
    await mesh.api.apply(SERVICES + ROUTE % (0, 100))
    snapshot = await caller.wait_for(lambda s: weights(s) == [0, 100], timeout=10)
    changed = {
        n for n in snapshot if before.get(n) is None or before[n].version != snapshot[n].version
    }
    assert changed == {"route/reviews.default"}

    # And the controller knows the proxy is in sync.
    async def synced() -> bool:
        _, status = await mesh.api.call("GET", "/api/v1/status")
        proxy = next(x for x in status["proxies"] if x["id"] == "productpage-0")
        return proxy["state"] == "synced" and proxy["versionAcked"] == caller.version

    await eventually(synced)


async def test_a_workload_that_stops_heartbeating_is_gone_and_callers_are_told(mesh: Mesh) -> None:
    await mesh.api.apply(SERVICES)
    server = mesh.client(
        "ratings-0",
        workload="ratings-0",
        labels={"app": "ratings"},
        address="198.18.0.21",
        ports=[9080],
    )
    caller = mesh.client("reviews-0", subscriptions=["ratings"])
    await server.start()
    await caller.start()
    await caller.wait_for(
        lambda s: len(s.get("endpoints/ratings.default", _EMPTY).body["endpoints"]) == 1, 10
    )

    # As if it crashed: no goodbye, no more heartbeats; the lease (1.5 s here) runs out.
    await server.stop(leave=False)
    started = asyncio.get_running_loop().time()
    await caller.wait_for(lambda s: s["endpoints/ratings.default"].body["endpoints"] == [], 10)
    assert asyncio.get_running_loop().time() - started < 1.5 + 1.0
    status, _ = await mesh.api.call("GET", "/api/v1/resources/Workload/default/ratings-0")
    assert status == 404


async def test_a_proxy_that_leaves_cleanly_is_deregistered_at_once(mesh: Mesh) -> None:
    await mesh.api.apply(SERVICES)
    server = mesh.client(
        "ratings-1", workload="ratings-1", labels={"app": "ratings"}, address="198.18.0.22"
    )
    caller = mesh.client("reviews-1", subscriptions=["ratings"])
    await server.start()
    await caller.start()
    await caller.wait_for(
        lambda s: len(s.get("endpoints/ratings.default", _EMPTY).body["endpoints"]) == 1, 10
    )
    await server.stop()  # a clean stop says goodbye
    # Well before the 1.5 s lease could expire, callers no longer see it.
    await caller.wait_for(lambda s: s["endpoints/ratings.default"].body["endpoints"] == [], 1.0)


async def test_a_rejected_snapshot_is_nacked_with_its_reason_and_the_old_one_stays(
    mesh: Mesh,
) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (90, 10))

    def refuse_even_split(snapshot: Snapshot, version: str) -> None:
        if "route/reviews.default" in snapshot and weights(snapshot) == [50, 50]:
            raise ValueError("this proxy refuses even splits")

    picky = mesh.client("picky-0", subscriptions=["reviews"], on_update=refuse_even_split)
    await picky.start()
    await picky.wait_for(lambda s: "route/reviews.default" in s, 10)
    good_version = picky.version

    await mesh.api.apply(SERVICES + ROUTE % (50, 50))

    async def nacked() -> bool:
        _, status = await mesh.api.call("GET", "/api/v1/status")
        proxy = next(x for x in status["proxies"] if x["id"] == "picky-0")
        return proxy["state"] == "nack" and "refuses even splits" in proxy["lastNack"]["reason"]

    await eventually(nacked)
    assert picky.version == good_version
    assert weights(picky.snapshot) == [90, 10]

    # A later good change is accepted again.
    await mesh.api.apply(SERVICES + ROUTE % (70, 30))
    await picky.wait_for(lambda s: weights(s) == [70, 30], 10)


async def test_a_burst_of_changes_is_coalesced_into_few_pushes(mesh: Mesh) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (1, 1))
    pushes: list[str] = []

    def count(snapshot: Snapshot, version: str) -> None:
        pushes.append(version)

    watcher = mesh.client("watcher-0", subscriptions=["reviews"], on_update=count)
    await watcher.start()
    await watcher.wait_for(lambda s: "route/reviews.default" in s, 10)
    pushes.clear()
    for weight in range(2, 22):
        await mesh.api.apply(SERVICES + ROUTE % (weight, 1))
    await watcher.wait_for(lambda s: weights(s) == [21, 1], 10)
    assert 1 <= len(pushes) <= 5, f"20 applies became {len(pushes)} pushes"


async def test_a_reconnecting_proxy_resumes_without_a_full_push(mesh: Mesh) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (90, 10))
    received: list[int] = []
    first = mesh.client("resumer-0", subscriptions=["reviews"])
    await first.start()
    await first.wait_for(lambda s: "route/reviews.default" in s, 10)
    held = dict(first.snapshot)
    await first.stop()

    def record(snapshot: Snapshot, version: str) -> None:
        received.append(len(snapshot))

    # A new process for the same proxy, starting from what the old one persisted? Here:
    # the same held versions, given in its hello; the controller sends an empty delta.
    second = mesh.client("resumer-0", subscriptions=["reviews"], on_update=record)
    second.snapshot, second.version = held, first.version
    await second.start()
    await eventually(
        lambda: (
            mesh.controller.discovery.sessions.get("resumer-0") is not None
            and mesh.controller.discovery.sessions["resumer-0"].state == "synced"
        )
    )
    assert second.version == first.version  # no push was needed: it held this version
    assert received == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_EMPTY = type("Empty", (), {"body": {"endpoints": []}})()


async def test_a_proxy_rides_out_a_controller_restart_and_resumes(
    mesh: Mesh, tmp_path: Path
) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (90, 10))
    pushes: list[str] = []

    def record(snapshot: Snapshot, version: str) -> None:
        pushes.append(version)

    client = mesh.client("steady-0", subscriptions=["reviews"], on_update=record)
    await client.start()
    await client.wait_for(lambda s: "route/reviews.default" in s, 10)
    held_version, pushes_before = client.version, len(pushes)

    config = mesh.controller.config
    port = mesh.controller.discovery_port
    await mesh.controller.stop()
    await eventually(lambda: not client.connected.is_set(), what="the client noticing")
    # Static stability: with no controller, the proxy keeps what it had.
    assert client.version == held_version
    assert weights(client.snapshot) == [90, 10]

    restarted = Controller(replace(config, discovery_port=port))
    await restarted.start()
    mesh.controller = restarted
    await eventually(lambda: restarted.discovery.sessions.get("steady-0") is not None)
    await eventually(lambda: restarted.discovery.sessions["steady-0"].state == "synced")
    # It resumed from the versions it held: nothing had changed, so nothing was sent.
    assert len(pushes) == pushes_before
    assert client.version == held_version


async def test_a_proxy_restarts_from_its_saved_snapshot_without_a_controller(
    mesh: Mesh, tmp_path: Path
) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (90, 10))
    state_dir = tmp_path / "proxy-state"
    first = mesh.client("saver-0", subscriptions=["reviews"], state_dir=state_dir)
    await first.start()
    await first.wait_for(lambda s: "route/reviews.default" in s, 10)
    await first.stop()

    # The proxy restarts while no controller answers at that address.
    loaded: list[str] = []

    def record(snapshot: Snapshot, version: str) -> None:
        loaded.append(version)

    orphan = DiscoveryClient(
        [ControllerAddress("127.0.0.1", free_port())],
        first.node,
        trust_bundle=mesh.home / "ca" / "root.pem",
        state_dir=state_dir,
        on_update=record,
    )
    await orphan.start()
    try:
        assert orphan.loaded_from_disk
        assert loaded == [first.version]
        assert weights(orphan.snapshot) == [90, 10]
        assert orphan.subscriptions == {"reviews"}
        assert not orphan.connected.is_set()
    finally:
        await orphan.stop()


async def test_a_proxy_subscribes_on_demand_and_hears_about_unknown_names(mesh: Mesh) -> None:
    await mesh.api.apply(SERVICES)
    client = mesh.client("lazy-0")
    await client.start()
    await client.connected.wait()
    assert not any(name.startswith("route/") for name in client.snapshot)

    await client.subscribe("ratings.default.svc.cluster.local", "nowhere", timeout=10)
    assert "route/ratings.default" in client.snapshot
    assert "no Service named 'nowhere'" in client.snapshot["unresolved/nowhere"].body["reason"]

    # When the missing service appears, the proxy is told without asking again.
    await mesh.api.apply(SERVICES.replace("name: ratings,", "name: nowhere,"))
    await client.wait_for(lambda s: "route/nowhere.default" in s, 10)
    assert "unresolved/nowhere" not in client.snapshot


async def _tls_connection(mesh: Mesh) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tls = ssl.create_default_context(cafile=str(mesh.home / "ca" / "root.pem"))
    return await asyncio.open_connection(
        "127.0.0.1", mesh.controller.discovery_port, ssl=tls, server_hostname="127.0.0.1"
    )


async def _refusal(reader: asyncio.StreamReader) -> p.Refusal:
    header = await asyncio.wait_for(reader.readexactly(4), 10)
    payload = await reader.readexactly(int.from_bytes(header, "big"))
    message = p.parse_server_message(payload)
    assert isinstance(message, p.Refusal)
    return message


async def test_garbage_on_the_discovery_port_is_refused_without_harming_proxies(
    mesh: Mesh,
) -> None:
    await mesh.api.apply(SERVICES + ROUTE % (90, 10))
    good = mesh.client("good-0", subscriptions=["reviews"])
    await good.start()
    await good.wait_for(lambda s: "route/reviews.default" in s, 10)

    # Not a hello first.
    reader, writer = await _tls_connection(mesh)
    writer.write(p.encode(p.Heartbeat()))
    assert "first message must be a hello" in (await _refusal(reader)).message
    writer.close()

    # A frame that announces more than a hello may weigh.
    reader, writer = await _tls_connection(mesh)
    writer.write((p.MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    assert "a hello is at most" in (await _refusal(reader)).message
    writer.close()

    # Valid framing, nonsense inside.
    reader, writer = await _tls_connection(mesh)
    writer.write(len(b"{nope").to_bytes(4, "big") + b"{nope")
    assert "malformed message from proxy" in (await _refusal(reader)).message
    writer.close()

    # The well-behaved proxy never noticed.
    await mesh.api.apply(SERVICES + ROUTE % (10, 90))
    await good.wait_for(lambda s: weights(s) == [10, 90], 10)
    assert good.connected.is_set()


async def test_a_proxy_that_goes_silent_is_dropped(mesh: Mesh) -> None:
    _, writer = await _tls_connection(mesh)
    writer.write(p.encode(p.Hello(node=p.NodeInfo(id="mute-0"))))
    await eventually(lambda: "mute-0" in mesh.controller.discovery.sessions)
    # No heartbeats from here on: after three missed intervals (0.3 s each here) it is gone.
    await eventually(lambda: "mute-0" not in mesh.controller.discovery.sessions, timeout=5)
    writer.close()
