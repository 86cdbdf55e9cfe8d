"""The synchronous path of the sidecar (a request routed and sent inside the read
callback, on a pooled connection) keeps every behaviour of the asynchronous one: a
retry after a 503 or a reset still happens (handed over to the asynchronous path), a
route timeout still fires, and heads that need no change go through byte for byte."""

from __future__ import annotations

import json

from tests.support.proxy_mesh import ProxyMesh

from mycelium.telemetry import FinishedRequest


def route(rules: str) -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: reviews}}
spec:
  parentRefs: [{{name: reviews}}]
  rules:
{rules}"""


async def configure(mesh: ProxyMesh, rules: str) -> None:
    await mesh.get("/")
    before = mesh.caller.core.active.version
    await mesh.apply(route(rules))
    await mesh.settle(before)
    # Two requests leave an idle pooled connection to v1: the next one goes synchronously.
    for _ in range(2):
        response = await mesh.get("/")
        assert response.status == 200, await response.text()
        await response.read()


def synchronous_requests(mesh: ProxyMesh) -> int:
    return mesh.caller.core.requests_sync


async def test_a_503_on_the_synchronous_path_is_retried(proxy_mesh: ProxyMesh) -> None:
    await configure(
        proxy_mesh,
        """  - backendRefs: [{name: reviews, subset: v1}]
    retries: {attempts: 2, retryOn: [5xx]}""",
    )
    counters = proxy_mesh.caller.core.counters
    before = synchronous_requests(proxy_mesh)
    handed_over = counters["sync_retries_handed_over"]

    response = await proxy_mesh.get("/?fail_first=1&key=sync")

    assert response.status == 200
    assert response.headers["x-served-by"] == "reviews-v1"
    attempts = [r for r in proxy_mesh.v1.seen if r["path"] == "/?fail_first=1&key=sync"]
    assert len(attempts) == 2
    assert synchronous_requests(proxy_mesh) > before
    assert counters["sync_retries_handed_over"] == handed_over + 1


async def test_a_route_timeout_fires_on_the_synchronous_path(proxy_mesh: ProxyMesh) -> None:
    await configure(
        proxy_mesh,
        """  - backendRefs: [{name: reviews, subset: v1}]
    timeout: 200ms""",
    )
    before = synchronous_requests(proxy_mesh)

    response = await proxy_mesh.get("/?delay=2")

    assert response.status == 504
    assert response.headers["x-mycelium-reason"] == "upstream_timeout"
    assert "within 200ms" in await response.text()
    assert synchronous_requests(proxy_mesh) == before + 1
    # The proxy still serves after it abandoned that connection.
    assert (await proxy_mesh.get("/")).status == 200


async def test_a_timeout_is_retried_when_the_rule_allows(proxy_mesh: ProxyMesh) -> None:
    await configure(
        proxy_mesh,
        """  - backendRefs: [{name: reviews, subset: v1}]
    timeout: 3s
    retries: {attempts: 1, perTryTimeout: 200ms, retryOn: [5xx]}""",
    )
    counters = proxy_mesh.caller.core.counters
    handed_over = counters["sync_retries_handed_over"]

    response = await proxy_mesh.get("/?delay=1")

    assert response.status == 504
    assert "per-try timeout" in await response.text()
    assert len([r for r in proxy_mesh.v1.seen if r["path"] == "/?delay=1"]) == 2
    assert counters["sync_retries_handed_over"] == handed_over + 1


async def test_the_access_log_and_endpoint_stats_see_synchronous_requests(
    proxy_mesh: ProxyMesh,
) -> None:
    await configure(proxy_mesh, """  - backendRefs: [{name: reviews, subset: v1}]""")
    core = proxy_mesh.caller.core
    finished: list[FinishedRequest] = []

    class Recorder:
        def request_finished(self, request: FinishedRequest) -> None:
            finished.append(request)

    core.request_observers.append(Recorder())
    requests_before = core.requests
    before = synchronous_requests(proxy_mesh)

    response = await proxy_mesh.get("/stats?status=200")
    record_seen = json.loads(await response.read())

    assert record_seen["path"] == "/stats?status=200"
    assert synchronous_requests(proxy_mesh) == before + 1
    assert core.requests == requests_before + 1
    (exchange,) = finished
    assert exchange.status == 200
    assert exchange.rule_name
    assert exchange.upstream_host.startswith("127.0.0.11:")
    assert exchange.bytes_sent > 0
    cluster = next(c for c in core.clusters if c.name == exchange.cluster_name)
    assert cluster.breaker.requests == 0  # the slot was given back
    (endpoint,) = [e for e in cluster.endpoints if e.key == exchange.upstream_host]
    assert endpoint.in_flight == 0
