"""Two sidecars and an app: the serving side's rate limits and forwarding headers,
outlier ejection seen in /clusters, the admin and health endpoints, and a graceful
drain that lets the request in flight finish."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from tests.support.polling import eventually
from tests.support.proxy_mesh import BASE, RATINGS, ProxyMesh, admin, start_ratings

LIMIT = """---
apiVersion: mycelium.io/v1
kind: RateLimitPolicy
metadata: {name: ratings}
spec:
  targetRef: {kind: Service, name: ratings}
  limit: {requests: 3, per: 1m}
"""


async def test_two_hops_carry_forwarding_headers_and_the_serving_side_rate_limits(
    proxy_mesh: ProxyMesh,
) -> None:
    app, sidecar = await start_ratings(proxy_mesh)
    try:
        await eventually(lambda: 9080 in sidecar.core.active.inbound_ports, what="inbound config")
        response = await proxy_mesh.get("/stars", host="ratings")
        assert response.status == 200
        record = json.loads(await response.read())
        # The app was reached through the ratings sidecar, which saw the caller's address.
        assert record["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert record["headers"]["x-forwarded-proto"] == "http"
        assert "for=127.0.0.1" in record["headers"]["forwarded"]

        before = sidecar.core.active.version
        await proxy_mesh.apply(RATINGS.format(port=app.port) + LIMIT)
        await eventually(lambda: sidecar.core.active.version != before, what="the limit")
        statuses = [(await proxy_mesh.get("/stars", host="ratings")) for _ in range(5)]
        codes = [r.status for r in statuses]
        assert codes.count(200) == 3, codes
        refused = statuses[-1]
        assert refused.status == 429
        assert refused.headers["x-mycelium-reason"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert len([r for r in app.seen if r["path"] == "/stars"]) == 4  # 1 before, 3 after
    finally:
        await sidecar.stop()
        await app.stop()


async def test_a_failing_endpoint_is_ejected_and_shown_as_ejected(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    policy = (
        "  host: reviews\n"
        "  loadBalancer: {type: ROUND_ROBIN}\n"
        "  outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 30s,"
        " maxEjectionPercent: 50}\n"
    )
    manifest = BASE.format(port=proxy_mesh.app_port).replace("  host: reviews\n", policy)
    status, body = await proxy_mesh.api.apply(manifest)
    assert status == 200, body
    await proxy_mesh.settle(before)
    # v2 dies: connecting to it fails, which counts as a gateway error (and a 5xx).
    await proxy_mesh.v2.stop()
    for _ in range(6):
        await proxy_mesh.get("/")

    async def ejected() -> bool:
        _, body = await admin(proxy_mesh.caller, "/clusters")
        endpoints = [e for c in body["clusters"] for e in c["endpoints"]]
        return any(e["address"].startswith("127.0.0.12") and e["ejected"] for e in endpoints)

    await eventually(ejected, what="v2 ejected")
    served = {(await proxy_mesh.get("/")).headers.get("x-served-by") for _ in range(10)}
    assert served == {"reviews-v1"}


async def test_admin_and_health_endpoints(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    status, body = await admin(proxy_mesh.caller, "/healthz/ready", "health")
    assert (status, body["ready"]) == (200, True)
    status, dump = await admin(proxy_mesh.caller, "/config_dump")
    assert status == 200
    assert dump["version"] == proxy_mesh.caller.core.active.version
    assert "route/reviews.default" in dump["entries"]
    assert dump["connected"] is True
    status, stats = await admin(proxy_mesh.caller, "/stats")
    assert stats["counters"]["requests"] >= 1


async def test_drain_finishes_the_request_in_flight_and_stops_accepting(
    proxy_mesh: ProxyMesh,
) -> None:
    await proxy_mesh.get("/")
    slow = asyncio.create_task(proxy_mesh.get("/?delay=0.7"))
    await eventually(
        lambda: any("delay" in r["path"] for r in proxy_mesh.v1.seen + proxy_mesh.v2.seen)
    )
    drained = asyncio.create_task(proxy_mesh.caller.drain(5))
    await eventually(lambda: proxy_mesh.caller.core.draining)
    # Readiness turns false at once, so that nothing new is sent this way.
    status, body = await admin(proxy_mesh.caller, "/healthz/ready", "health")
    assert (status, body["draining"]) == (503, True)
    response = await slow
    assert response.status == 200
    assert response.headers.get("connection", "").lower() == "close"
    await drained
    address = proxy_mesh.caller.bound["outbound"]
    try:
        _, writer = await asyncio.open_connection(address.host, address.port)
        writer.close()
        accepted = True
    except OSError:
        accepted = False
    assert not accepted


async def test_a_sidecar_leaves_the_mesh_and_joins_again_on_request(
    proxy_mesh: ProxyMesh,
) -> None:
    """A pod's graceful stop starts with a leave: peers stop choosing the workload, and
    what still reaches its sidecar is served (the app has not been stopped yet). A
    join (the runtime's, once an app is ready) registers it again."""
    app, ratings = await start_ratings(proxy_mesh)
    controller = proxy_mesh.controller

    def registered() -> bool:
        return any(w.metadata.name == "ratings-0" for w in controller.state.of_kind("Workload"))

    async def post(path: str) -> None:
        address = ratings.bound["admin"]
        url = f"http://{address.host}:{address.port}{path}"
        async with aiohttp.ClientSession() as session, session.post(url) as response:
            assert response.status == 200

    async def refused() -> str | None:
        response = await proxy_mesh.get("/stars", host="ratings")
        return response.headers.get("x-mycelium-reason") if response.status == 503 else None

    async def answered() -> bool:
        return (await proxy_mesh.get("/stars", host="ratings")).status == 200

    try:
        await eventually(registered, what="ratings-0 registered")
        assert (await proxy_mesh.get("/stars", host="ratings")).status == 200
        stream = controller.discovery.sessions["ratings-0"]

        await post("/leave")

        await eventually(lambda: not registered(), what="ratings-0 deregistered")
        reason = await eventually(refused, what="callers no longer sending to ratings-0")
        assert reason == "no_healthy_upstream"
        status, body = await admin(ratings, "/healthz/ready", "health")
        assert (status, body["left"]) == (503, True)
        # Still serving what reaches it: a request straight to its inbound port.
        direct = f"http://127.0.0.21:{app.port}/stars"
        async with aiohttp.ClientSession() as session, session.get(direct) as response:
            assert response.status == 200
        # The stream stays up; a reconnect would not register the workload again.
        assert controller.discovery.sessions["ratings-0"] is stream
        stream.writer.close()
        await eventually(
            lambda: controller.discovery.sessions.get("ratings-0") not in (None, stream),
            what="ratings-0 reconnected",
        )
        assert not registered()

        await post("/join")

        await eventually(registered, what="ratings-0 registered again")
        await eventually(answered, what="callers sending to ratings-0 again")
        status, body = await admin(ratings, "/healthz/ready", "health")
        assert (status, body["left"]) == (200, False)
    finally:
        await ratings.stop()
        await app.stop()
