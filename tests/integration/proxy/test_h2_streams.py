"""HTTP/2 (h2c prior knowledge) through the caller's sidecar to h2c apps: streams
multiplexed on one connection each way, headers, bodies and trailers passed through,
and the proxy's own answers on a stream."""

from __future__ import annotations

import asyncio
import subprocess

from tests.support.h2_apps import H2_BASE as BASE
from tests.support.h2_apps import RATINGS, H2Client, H2Mesh, h2_mesh
from tests.support.polling import eventually

__all__ = ["h2_mesh"]


async def test_concurrent_streams_share_one_connection_each_way(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        responses = [client.start(f"/item/{i}?delay=0.05") for i in range(50)]
        await asyncio.wait_for(asyncio.gather(*(r.done for r in responses)), 10)
    finally:
        await client.close()
    assert [r.status for r in responses] == [200] * 50
    assert {r.headers["x-echo-path"] for r in responses} == {
        f"/item/{i}?delay=0.05" for i in range(50)
    }
    # one upstream connection per endpoint, whatever the number of streams
    assert h2_mesh.v1.connections <= 1
    assert h2_mesh.v2.connections <= 1
    assert len(h2_mesh.v1.seen) + len(h2_mesh.v2.seen) == 50


def route(rules: str) -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: reviews}}
spec:
  parentRefs: [{{name: reviews}}]
  rules:
{rules}"""


async def configure(h2_mesh: H2Mesh, client: H2Client, rules: str) -> None:
    """Apply a route for reviews and wait until the caller uses it."""
    await client.request("/")  # the caller subscribes to reviews on first use
    caller = h2_mesh.mesh.caller
    before = caller.core.active.version
    await h2_mesh.apply(route(rules))
    await eventually(lambda: caller.core.active.version != before)


async def test_headers_bodies_and_trailers_pass_both_ways(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        body = bytes(range(256)) * 1000
        response = await client.request(
            "/upload?trailers=1",
            method="POST",
            headers=[("x-request-id", "abc"), ("te", "trailers")],
            body=body,
            trailers=[("x-request-checksum", "1234")],
        )
    finally:
        await client.close()
    assert response.status == 200
    assert bytes(response.body) == body
    assert response.headers["x-echo-method"] == "POST"
    assert response.trailers == {"x-trailer-bytes": str(len(body)), "grpc-status": "0"}
    [seen] = h2_mesh.v1.seen + h2_mesh.v2.seen
    assert seen["headers"]["x-request-id"] == "abc"
    assert seen["headers"]["te"] == "trailers"
    assert seen["trailers"] == {"x-request-checksum": "1234"}
    assert seen["authority"] == "reviews:9080"
    assert seen["body_bytes"] == len(body)


async def test_trailer_fields_rfc_9110_forbids_are_dropped_both_ways(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        response = await client.request(
            "/upload?trailers=smuggle",
            method="POST",
            headers=[("te", "trailers")],
            body=b"payload",
            trailers=[
                ("x-request-checksum", "1234"),
                ("authorization", "Bearer after-the-check"),
                ("host", "payments:9080"),
                ("content-length", "99"),
                ("cookie", "session=theirs"),
            ],
        )
    finally:
        await client.close()
    assert response.status == 200
    # The app sent set-cookie, content-length and location in its trailers too.
    assert response.trailers == {"x-trailer-bytes": "7", "grpc-status": "0"}
    [seen] = h2_mesh.v1.seen + h2_mesh.v2.seen
    assert seen["trailers"] == {"x-request-checksum": "1234"}
    # The caller's sidecar stands between both: 4 of the request's, 3 of the response's.
    assert h2_mesh.mesh.caller.core.counters["trailer_fields_dropped"] == 7


async def test_curl_with_prior_knowledge_reaches_the_service(h2_mesh: H2Mesh) -> None:
    host, port = h2_mesh.outbound
    result = await asyncio.to_thread(
        subprocess.run,
        [
            "curl", "-sS", "--http2-prior-knowledge", "-D", "-",
            "-H", "Host: reviews:9080", f"http://{host}:{port}/hello",
        ],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/2 200")
    assert b'"path": "/hello"' in result.stdout


async def test_an_unknown_service_is_named_on_the_stream(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        plain = client.start("/", authority="nonexistent:80")
        grpc_call = client.start(
            "/echo.Echo/Say",
            authority="nonexistent:80",
            method="POST",
            headers=[("content-type", "application/grpc"), ("te", "trailers")],
            body=b"\0\0\0\0\0",
        )
        await asyncio.wait_for(asyncio.gather(plain.done, grpc_call.done), 10)  # type: ignore[arg-type]
        again = await client.request("/")  # the connection still serves
    finally:
        await client.close()
    assert plain.status == 503
    assert plain.headers["x-mycelium-reason"] == "unknown_service"
    assert b"nonexistent" in plain.body
    # gRPC: trailers-only, UNAVAILABLE
    assert grpc_call.status == 200
    assert grpc_call.headers["grpc-status"] == "14"
    assert grpc_call.headers["x-mycelium-reason"] == "unknown_service"
    assert "nonexistent" in grpc_call.headers["grpc-message"]
    assert not grpc_call.body
    assert again.status == 200


async def test_a_slow_upstream_hits_the_route_timeout(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        await configure(h2_mesh, client, "  - backendRefs: [{name: reviews}]\n    timeout: 200ms")
        plain = client.start("/?delay=2")
        grpc_call = client.start(
            "/?delay=2",
            method="POST",
            headers=[("content-type", "application/grpc+proto")],
            body=b"\0\0\0\0\0",
        )
        fast = client.start("/fast")
        await asyncio.wait_for(asyncio.gather(plain.done, grpc_call.done, fast.done), 10)  # type: ignore[arg-type]
    finally:
        await client.close()
    assert plain.status == 504
    assert plain.headers["x-mycelium-reason"] == "upstream_timeout"
    assert b"within 200ms" in plain.body
    assert grpc_call.headers["grpc-status"] == "4"  # DEADLINE_EXCEEDED
    assert grpc_call.headers["x-mycelium-reason"] == "upstream_timeout"
    assert fast.status == 200


async def test_safe_requests_are_retried_before_any_response_byte(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        await configure(
            h2_mesh,
            client,
            "  - backendRefs: [{name: reviews, subset: v1}]\n"
            "    retries: {attempts: 2, retryOn: [5xx]}",
        )
        response = await client.request("/?status=503")
        posted = await client.request("/post?status=503", method="POST", body=b"x")
    finally:
        await client.close()
    assert response.status == 503
    assert len([r for r in h2_mesh.v1.seen if r["path"] == "/?status=503"]) == 3
    assert posted.status == 503
    assert len([r for r in h2_mesh.v1.seen if r["path"] == "/post?status=503"]) == 1


async def test_a_drain_lets_the_stream_in_flight_finish_then_says_goaway(h2_mesh: H2Mesh) -> None:
    caller = h2_mesh.mesh.caller
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        await client.request("/warm-up")
        in_flight = client.start("/slow?delay=0.3")
        await eventually(
            lambda: any("/slow" in r["path"] for r in h2_mesh.v1.seen + h2_mesh.v2.seen)
        )
        drained = asyncio.get_running_loop().create_task(caller.drain(5))
        assert in_flight.done is not None
        await asyncio.wait_for(in_flight.done, 10)
        await asyncio.wait_for(client.closed.wait(), 10)
        await drained
    finally:
        await client.close()
    assert in_flight.status == 200
    assert client.goaway == 0  # NO_ERROR


async def test_an_endpoint_that_goes_away_mid_request_is_an_upstream_reset(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        await configure(h2_mesh, client, "  - backendRefs: [{name: reviews, subset: v1}]")
        pending = client.start("/doomed?delay=5")
        await eventually(lambda: any(r["path"] == "/doomed?delay=5" for r in h2_mesh.v1.seen))
        for conn in list(h2_mesh.v1.open_connections):
            assert conn.transport is not None
            conn.transport.abort()
        assert pending.done is not None
        await asyncio.wait_for(pending.done, 10)
        after = await client.request("/after")  # a fresh connection to the endpoint
    finally:
        await client.close()
    assert pending.status == 502
    assert pending.headers["x-mycelium-reason"] == "upstream_reset"
    assert after.status == 200
    assert h2_mesh.v1.connections == 2


async def test_an_idle_endpoint_connection_is_closed(h2_mesh: H2Mesh) -> None:
    pools = h2_mesh.mesh.caller.core.h2_pools
    pools.idle_seconds = 0.2
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        assert (await client.request("/once")).status == 200
        apps = (h2_mesh.v1, h2_mesh.v2)
        assert sum(len(app.open_connections) for app in apps) == 1
        await eventually(lambda: sum(len(app.open_connections) for app in apps) == 0)
        assert (await client.request("/again")).status == 200  # a new one is opened
    finally:
        await client.close()
    assert pools.connections()[0].idle_since is not None


async def test_streams_an_endpoint_never_processed_are_sent_again(h2_mesh: H2Mesh) -> None:
    # Like nginx after keepalive_requests: every 15 streams the app says a graceful
    # GOAWAY and ignores the streams the proxy had already opened beyond the last one.
    for app in (h2_mesh.v1, h2_mesh.v2):
        app.max_requests_per_connection = 15
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        responses = [client.start(f"/n/{i}?delay=0.02") for i in range(60)]
        await asyncio.wait_for(asyncio.gather(*(r.done for r in responses)), 20)
    finally:
        await client.close()
    assert [r.status for r in responses] == [200] * 60
    assert h2_mesh.v1.connections + h2_mesh.v2.connections > 2  # GOAWAYs really happened
    served = [r["path"] for r in h2_mesh.v1.seen + h2_mesh.v2.seen]
    assert sorted(served) == sorted(f"/n/{i}?delay=0.02" for i in range(60))  # each once


async def test_consistent_hash_keeps_each_user_on_one_endpoint(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        await client.request("/")  # the caller subscribes to reviews on first use
        caller = h2_mesh.mesh.caller
        before = caller.core.active.version
        hashed = (
            BASE.format(port=h2_mesh.mesh.app_port)
            + "  loadBalancer: {type: CONSISTENT_HASH, consistentHash: {header: x-user}}\n"
            + RATINGS.format(port=h2_mesh.grpc_port)
        )
        status, body = await h2_mesh.mesh.api.apply(hashed)
        assert status == 200, body
        await eventually(lambda: caller.core.active.version != before)

        endpoints_by_user: dict[str, set[str]] = {}
        for round_ in range(3):
            for user in (f"user-{i}" for i in range(13)):  # odd: round robin would move them
                response = await client.request(f"/?r={round_}", headers=[("x-user", user)])
                endpoints_by_user.setdefault(user, set()).add(response.headers["x-served-by"])
    finally:
        await client.close()
    assert all(len(seen) == 1 for seen in endpoints_by_user.values()), endpoints_by_user
    assert {e for seen in endpoints_by_user.values() for e in seen} == {"reviews-v1", "reviews-v2"}


async def test_mirroring_copies_a_stream_with_its_body_over_http2(h2_mesh: H2Mesh) -> None:
    client = await H2Client.connect(*h2_mesh.outbound)
    try:
        await configure(
            h2_mesh,
            client,
            """  - backendRefs: [{name: reviews, subset: v1}]
    mirror: {backendRef: {name: reviews, subset: v2}}""",
        )
        body = b"order #7" * 1000
        response = await client.request(
            "/mirrored", method="POST", body=body, headers=[("x-request-id", "m-1")]
        )
    finally:
        await client.close()
    assert response.status == 200
    assert response.headers["x-served-by"] == "reviews-v1"  # the answer is the real one's

    def shadow() -> dict[str, object] | None:
        return next((r for r in h2_mesh.v2.seen if r["path"] == "/mirrored"), None)

    copy = await eventually(shadow, what="the shadow copy reaching v2")
    assert copy["authority"] == "reviews:9080-shadow"
    assert copy["body_bytes"] == len(body)
    assert copy["headers"]["x-request-id"] == "m-1"  # type: ignore[index]
    counters = h2_mesh.mesh.caller.core.counters
    await eventually(lambda: counters["mirror_sent"] >= 1, what="the copy's response read")
