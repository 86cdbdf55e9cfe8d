"""The sidecar's HTTP/1.1 data path against real apps, configured by a real controller:
routing, traffic splits, faults, timeouts, retries, header rewriting and mirroring, and
responses that say why when the proxy answers itself."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter

from tests.support.polling import eventually
from tests.support.proxy_mesh import BASE, ProxyMesh


def route(rules: str) -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: reviews}}
spec:
  parentRefs: [{{name: reviews}}]
  rules:
{rules}"""


async def served_by(mesh: ProxyMesh, path: str = "/", **kwargs: object) -> str:
    response = await mesh.get(path, **kwargs)
    assert response.status == 200, await response.text()
    return response.headers["x-served-by"]


async def test_a_request_by_service_name_reaches_the_service(proxy_mesh: ProxyMesh) -> None:
    response = await proxy_mesh.get("/books?id=7")
    assert response.status == 200
    record = json.loads(await response.read())
    assert record["path"] == "/books?id=7"
    assert record["served_by"] in ("reviews-v1", "reviews-v2")
    assert record["headers"]["host"] == "reviews"


async def test_curl_through_the_proxy_like_an_http_proxy_client(proxy_mesh: ProxyMesh) -> None:
    # HTTP_PROXY-style: absolute-form request line, as curl -x sends it.
    result = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "-x", proxy_mesh.outbound, "-D", "-", "http://reviews:9080/hello"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert b"200 OK" in result.stdout.split(b"\r\n", 1)[0]
    assert b'"path": "/hello"' in result.stdout


async def test_a_90_10_split_sends_about_90_percent_to_v1(proxy_mesh: ProxyMesh) -> None:
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.get("/")  # subscribe on demand
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs:
    - {name: reviews, subset: v1, weight: 90}
    - {name: reviews, subset: v2, weight: 10}""")
    )
    await proxy_mesh.settle(before)
    counts = Counter([await served_by(proxy_mesh) for _ in range(400)])
    assert 320 <= counts["reviews-v1"] <= 390, counts


async def test_a_header_match_pins_a_user_to_v2(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - matches: [{headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: reviews, subset: v2}]
  - backendRefs: [{name: reviews, subset: v1}]""")
    )
    await proxy_mesh.settle(before)
    for _ in range(10):
        assert await served_by(proxy_mesh, headers={"end-user": "jason"}) == "reviews-v2"
        assert await served_by(proxy_mesh) == "reviews-v1"


async def test_an_injected_abort_says_it_was_injected(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs: [{name: reviews}]
    fault: {abort: {httpStatus: 503, percentage: 100}}""")
    )
    await proxy_mesh.settle(before)
    response = await proxy_mesh.get("/")
    assert response.status == 503
    assert response.headers["x-mycelium-reason"] == "fault_injected"
    # Only the first request (before the fault) reached an app.
    assert len(proxy_mesh.v1.seen) + len(proxy_mesh.v2.seen) == 1


async def test_an_injected_delay_delays(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs: [{name: reviews}]
    fault: {delay: {fixedDelay: 300ms, percentage: 100}}""")
    )
    await proxy_mesh.settle(before)
    started = asyncio.get_running_loop().time()
    assert (await proxy_mesh.get("/")).status == 200
    assert asyncio.get_running_loop().time() - started >= 0.3


async def test_a_slow_upstream_hits_the_route_timeout(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs: [{name: reviews}]
    timeout: 200ms""")
    )
    await proxy_mesh.settle(before)
    response = await proxy_mesh.get("/?delay=2")
    assert response.status == 504
    assert response.headers["x-mycelium-reason"] == "upstream_timeout"
    assert "within 200ms" in await response.text()


async def test_retries_hide_transient_failures_of_safe_requests(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs: [{name: reviews, subset: v1}]
    retries: {attempts: 3, retryOn: [5xx]}""")
    )
    await proxy_mesh.settle(before)
    response = await proxy_mesh.get("/?fail_first=2&key=a")
    assert response.status == 200
    attempts = [r for r in proxy_mesh.v1.seen if r["path"] == "/?fail_first=2&key=a"]
    assert len(attempts) == 3

    # A POST is not repeated: its effect may already have happened.
    posted = await proxy_mesh.session.post(
        proxy_mesh.outbound + "/?fail_first=1&key=b", headers={"Host": "reviews"}, data=b"x"
    )
    assert posted.status == 503
    assert len([r for r in proxy_mesh.v1.seen if r["path"] == "/?fail_first=1&key=b"]) == 1


async def test_an_unknown_service_is_named_in_the_answer(proxy_mesh: ProxyMesh) -> None:
    response = await proxy_mesh.get("/", host="nonexistent")
    assert response.status == 503
    assert response.headers["x-mycelium-reason"] == "unknown_service"
    assert "nonexistent" in await response.text()


async def test_a_dead_endpoint_is_reported_as_a_connect_failure(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.v2.stop()
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(route("""  - backendRefs: [{name: reviews, subset: v2}]"""))
    await proxy_mesh.settle(before)
    response = await proxy_mesh.get("/")
    assert response.status == 503
    assert response.headers["x-mycelium-reason"] == "upstream_connect_failed"
    assert "127.0.0.12" in await response.text()


async def test_headers_are_rewritten_both_ways(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs: [{name: reviews, subset: v1}]
    filters:
      requestHeaders: {set: {x-env: canary}, remove: [x-secret]}
      responseHeaders: {add: {x-route: reviews}}""")
    )
    await proxy_mesh.settle(before)
    response = await proxy_mesh.get("/", headers={"x-secret": "s3cr3t", "x-env": "prod"})
    record = json.loads(await response.read())
    assert record["headers"]["x-env"] == "canary"
    assert "x-secret" not in record["headers"]
    assert response.headers["x-route"] == "reviews"


async def test_mirroring_copies_requests_without_changing_the_answer(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - backendRefs: [{name: reviews, subset: v1}]
    mirror: {backendRef: {name: reviews, subset: v2}}""")
    )
    await proxy_mesh.settle(before)
    response = await proxy_mesh.get("/mirrored?status=200")
    assert response.headers["x-served-by"] == "reviews-v1"

    def shadowed() -> bool:
        return any(r["path"] == "/mirrored?status=200" for r in proxy_mesh.v2.seen)

    await eventually(shadowed, what="the shadow copy reaching v2")
    shadow = next(r for r in proxy_mesh.v2.seen if r["path"] == "/mirrored?status=200")
    assert shadow["headers"]["host"] == "reviews-shadow"


async def test_a_config_change_does_not_disturb_a_request_in_flight(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    slow = asyncio.create_task(proxy_mesh.get("/?delay=0.8"))
    await eventually(
        lambda: any("delay" in r["path"] for r in proxy_mesh.v1.seen + proxy_mesh.v2.seen)
    )
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(route("""  - backendRefs: [{name: reviews, subset: v2}]"""))
    await proxy_mesh.settle(before)
    response = await slow
    assert response.status == 200
    assert await served_by(proxy_mesh) == "reviews-v2"


async def test_consistent_hash_keeps_each_user_on_one_endpoint(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    hashed = BASE.format(port=proxy_mesh.app_port) + (
        "  loadBalancer: {type: CONSISTENT_HASH, consistentHash: {header: x-user}}\n"
    )
    status, body = await proxy_mesh.api.apply(hashed)
    assert status == 200, body
    await proxy_mesh.settle(before)

    endpoints_by_user: dict[str, set[str]] = {}
    for round_ in range(3):
        for user in (f"user-{i}" for i in range(13)):  # odd: round robin would move them
            endpoint = await served_by(proxy_mesh, f"/?r={round_}", headers={"x-user": user})
            endpoints_by_user.setdefault(user, set()).add(endpoint)

    assert all(len(seen) == 1 for seen in endpoints_by_user.values()), endpoints_by_user
    # and the ring spreads users over both endpoints
    assert {e for seen in endpoints_by_user.values() for e in seen} == {
        "reviews-v1",
        "reviews-v2",
    }


async def test_a_request_no_rule_matches_is_answered_no_route(proxy_mesh: ProxyMesh) -> None:
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    await proxy_mesh.apply(
        route("""  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews}]""")
    )
    await proxy_mesh.settle(before)

    assert (await proxy_mesh.get("/api/books")).status == 200
    response = await proxy_mesh.get("/admin")

    assert response.status == 404
    assert response.headers["x-mycelium-reason"] == "no_route"
    assert "matches GET /admin" in await response.text()


async def apply_base_with(proxy_mesh: ProxyMesh, policy_lines: str, rules: str) -> None:
    """BASE with more DestinationPolicy settings (and a subset v3 that selects nobody),
    and a route; waits until the caller uses them."""
    await proxy_mesh.get("/")
    before = proxy_mesh.caller.core.active.version
    base = BASE.format(port=proxy_mesh.app_port).replace(
        "{name: v2, labels: {version: v2}}]",
        "{name: v2, labels: {version: v2}}, {name: v3, labels: {version: v3}}]",
    )
    status, body = await proxy_mesh.api.apply(base + policy_lines + route(rules))
    assert status == 200, body
    await proxy_mesh.settle(before)


async def test_a_full_cluster_answers_circuit_open_without_queueing(
    proxy_mesh: ProxyMesh,
) -> None:
    await apply_base_with(
        proxy_mesh,
        "  connectionPool: {maxRequestsInFlight: 1}\n",
        "  - backendRefs: [{name: reviews, subset: v1}]",
    )
    slow = asyncio.create_task(proxy_mesh.get("/?delay=0.5"))
    await eventually(lambda: any("delay" in r["path"] for r in proxy_mesh.v1.seen))

    refused = await proxy_mesh.get("/second")

    assert refused.status == 503
    assert refused.headers["x-mycelium-reason"] == "circuit_open"
    assert "limit of requests in flight" in await refused.text()
    assert (await slow).status == 200  # the request in flight was not harmed
    assert not any(r["path"] == "/second" for r in proxy_mesh.v1.seen)


async def test_retries_beyond_the_budget_are_refused_and_say_so(proxy_mesh: ProxyMesh) -> None:
    await apply_base_with(
        proxy_mesh,
        "  retryBudget: {ratio: 0, minRetriesPerSecond: 0}\n",
        """  - backendRefs: [{name: reviews, subset: v1}]
    retries: {attempts: 3, retryOn: [5xx]}""",
    )
    response = await proxy_mesh.get("/?status=503")

    assert response.status == 503
    assert response.headers["x-mycelium-reason"] == "retry_budget_exhausted"
    assert "status_503" in await response.text()  # the last failure is named
    # the budget allowed no retry: the app saw the request once
    assert len([r for r in proxy_mesh.v1.seen if r["path"] == "/?status=503"]) == 1


async def test_a_subset_with_no_endpoint_answers_no_healthy_upstream(
    proxy_mesh: ProxyMesh,
) -> None:
    await apply_base_with(proxy_mesh, "", "  - backendRefs: [{name: reviews, subset: v3}]")

    response = await proxy_mesh.get("/")

    assert response.status == 503
    assert response.headers["x-mycelium-reason"] == "no_healthy_upstream"
    assert "0 known" in await response.text()
