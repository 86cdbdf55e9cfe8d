"""Tracing end to end: a request through a caller's sidecar and the serving sidecar
yields a span from each, in one trace, parent and child, exported over OTLP/HTTP to a
receiver that decodes them with the official opentelemetry-proto messages; the app
gets a `traceparent` whose parent is the serving proxy's span. B3 input is continued,
an unsampled request exports nothing, and a collector that is away fails no request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from tests.support.apps import EchoApp
from tests.support.h2_apps import H2Client, H2Mesh, h2_mesh
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.polling import eventually
from tests.support.proxy_mesh import (
    RATINGS,
    ProxyMesh,
    free_port_on,
    serving_sidecar,
    sidecar,
)

from mycelium.proxy.listeners.server import ProxyServer
from mycelium.telemetry.tracing import parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE}-{CLIENT_SPAN}-01"
__all__ = ["h2_mesh"]
type Sidecar = AbstractAsyncContextManager[ProxyServer]
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def ratings(proxy_mesh: ProxyMesh) -> AsyncIterator[EchoApp]:
    app = await EchoApp("ratings", "127.0.0.1").start()
    await proxy_mesh.apply(RATINGS.format(port=app.port))
    try:
        yield app
    finally:
        await app.stop()


def serving(mesh: ProxyMesh, collector: str, sampling: float = 0.0) -> Sidecar:
    return serving_sidecar(
        mesh, "ratings-0", "127.0.0.21", trace_collector=collector, trace_sampling=sampling
    )


def calling(mesh: ProxyMesh, collector: str, sampling: float = 0.0) -> Sidecar:
    return sidecar(
        mesh,
        "productpage-1",
        labels={"app": "productpage"},
        service_account="productpage",
        trace_collector=collector,
        trace_sampling=sampling,
    )


async def get(mesh: ProxyMesh, caller: ProxyServer, path: str, **headers: str) -> int:
    url = f"http://127.0.0.1:{caller.bound['outbound'].port}{path}"
    async with mesh.session.get(url, headers={"Host": "ratings", **headers}) as response:
        await response.read()
        return response.status


async def ready(mesh: ProxyMesh, caller: ProxyServer, server: ProxyServer) -> None:
    """Until the caller reaches the server (its config and SVIDs in place)."""
    await eventually(
        lambda: 9080 in server.core.active.inbound_ports, what="the server's inbound port"
    )

    async def through() -> bool:
        return (
            await get(mesh, caller, "/warm-up", traceparent=f"00-{TRACE}-{CLIENT_SPAN}-00") == 200
        )

    await eventually(through, what="a request through both sidecars")


def hop(spans: list[ReceivedSpan], service: str) -> ReceivedSpan:
    [span] = [s for s in spans if s.service == service]
    return span


async def test_both_hops_report_spans_of_one_trace(
    proxy_mesh: ProxyMesh, ratings: EchoApp, receiver: OtlpReceiver
) -> None:
    async with (
        serving(proxy_mesh, receiver.url) as server,
        calling(proxy_mesh, receiver.url) as caller,
    ):
        await ready(proxy_mesh, caller, server)
        status = await get(
            proxy_mesh, caller, "/stars?id=7", traceparent=SAMPLED, tracestate="congo=t61rcWkgMzE"
        )
        assert status == 200
        spans = await eventually(lambda: len(receiver.trace(TRACE)) >= 2 and receiver.trace(TRACE))

    assert not receiver.rejected
    outbound = hop(spans, "productpage.default")
    inbound = hop(spans, "ratings.default")
    # the caller's sidecar continues the client's trace; the server's is its child
    assert outbound.span.kind == SPAN_KIND_CLIENT
    assert outbound.parent_span_id == CLIENT_SPAN
    assert inbound.span.kind == SPAN_KIND_SERVER
    assert inbound.parent_span_id == outbound.span_id
    assert outbound.span.trace_state == inbound.span.trace_state == "congo=t61rcWkgMzE"
    assert outbound.span.start_time_unix_nano <= inbound.span.start_time_unix_nano
    assert inbound.span.end_time_unix_nano <= outbound.span.end_time_unix_nano

    # the app's parent is the serving proxy's span
    seen = ratings.seen[-1]["headers"]
    assert seen["tracestate"] == "congo=t61rcWkgMzE"
    parent = parse_traceparent(seen["traceparent"].encode())
    assert parent is not None
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (TRACE, inbound.span_id)
    assert parent.sampled

    out, into = outbound.attributes, inbound.attributes
    assert out["http.request.method"] == into["http.request.method"] == "GET"
    assert out["url.path"] == into["url.path"] == "/stars"
    assert out["http.response.status_code"] == into["http.response.status_code"] == 200
    assert out["mycelium.service"] == "ratings.default"
    # the serving sidecar listens on its address at the app's port
    assert out["mycelium.upstream_host"] == f"127.0.0.21:{ratings.port}"
    assert into["mycelium.upstream_host"] == f"127.0.0.1:{ratings.port}"
    assert into["mycelium.peer_principal"] == "spiffe://cluster.local/ns/default/sa/productpage"
    assert inbound.resource["service.instance.id"] == "ratings-0"
    # the warm-up request was not sampled: nothing of it was exported
    assert {s.trace_id for s in receiver.spans()} == {TRACE}
    assert server.core.counters["trace_spans_exported"] >= 1
    assert server.core.counters["trace_export_failures"] == 0


async def test_b3_input_is_continued_and_answers_of_the_proxy_have_spans(
    proxy_mesh: ProxyMesh, ratings: EchoApp, receiver: OtlpReceiver
) -> None:
    b3_trace = "80f198ee56343ba864fe8b2a57d3eff7"
    async with (
        serving(proxy_mesh, receiver.url) as server,
        calling(proxy_mesh, receiver.url) as caller,
    ):
        await ready(proxy_mesh, caller, server)
        status = await get(
            proxy_mesh,
            caller,
            "/b3",
            **{"X-B3-TraceId": b3_trace, "X-B3-SpanId": "e457b5a2e4d86bd1", "X-B3-Sampled": "1"},
        )
        assert status == 200
        # a service nobody serves: the proxy answers itself, and says why in its span
        url = f"http://127.0.0.1:{caller.bound['outbound'].port}/"
        missing = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with proxy_mesh.session.get(
            url, headers={"Host": "nowhere", "traceparent": missing}
        ) as response:
            assert response.status >= 400
            reason = response.headers["x-mycelium-reason"]
        spans = await eventually(
            lambda: len(receiver.trace(b3_trace)) >= 2 and receiver.trace(b3_trace)
        )
        [refused] = await eventually(lambda: receiver.trace("0af7651916cd43dd8448eb211c80319c"))

    outbound = hop(spans, "productpage.default")
    inbound = hop(spans, "ratings.default")
    assert outbound.parent_span_id == "e457b5a2e4d86bd1"
    assert inbound.parent_span_id == outbound.span_id
    # the app sees W3C context only
    headers = ratings.seen[-1]["headers"]
    assert headers["traceparent"].startswith(f"00-{b3_trace}-{inbound.span_id}-")
    assert not any(name.startswith("x-b3-") for name in headers)
    assert refused.attributes["mycelium.reason"] == reason
    assert refused.span.status.code == 2  # STATUS_CODE_ERROR


async def test_sampling_zero_exports_nothing(
    proxy_mesh: ProxyMesh, ratings: EchoApp, receiver: OtlpReceiver
) -> None:
    async with (
        serving(proxy_mesh, receiver.url, sampling=0.0) as server,
        calling(proxy_mesh, receiver.url, sampling=0.0) as caller,
    ):
        await ready(proxy_mesh, caller, server)
        for _ in range(20):
            assert await get(proxy_mesh, caller, "/quiet") == 200
        headers = ratings.seen[-1]["headers"]
        assert "traceparent" not in headers  # nothing was started, so nothing travels
        # A sampled request afterwards: once its spans arrive, any span of the requests
        # before it would have arrived too (each proxy exports in finishing order).
        assert await get(proxy_mesh, caller, "/loud", traceparent=SAMPLED) == 200
        await eventually(lambda: len(receiver.trace(TRACE)) >= 2)
    assert {s.trace_id for s in receiver.spans()} == {TRACE}
    assert {s.attributes["url.path"] for s in receiver.spans()} == {"/loud"}


async def test_an_unreachable_collector_fails_no_request(
    proxy_mesh: ProxyMesh, ratings: EchoApp
) -> None:
    nowhere = f"http://127.0.0.1:{free_port_on('127.0.0.1')}"
    async with (
        serving(proxy_mesh, nowhere, sampling=1.0) as server,
        calling(proxy_mesh, nowhere, sampling=1.0) as caller,
    ):
        await ready(proxy_mesh, caller, server)
        for _ in range(10):
            assert await get(proxy_mesh, caller, "/anyway") == 200
        await eventually(
            lambda: (
                caller.core.counters["trace_export_failures"] >= 1
                and server.core.counters["trace_export_failures"] >= 1
            ),
            what="export failures counted",
        )
        assert caller.core.counters["trace_spans_dropped"] >= 1
        assert caller.core.counters["trace_spans_exported"] == 0


async def test_http2_streams_are_traced_like_http1_requests(
    h2_mesh: H2Mesh, receiver: OtlpReceiver
) -> None:
    proxy = h2_mesh.mesh.proxy(
        "traced-0", subscriptions=["reviews"], trace_collector=receiver.url, trace_sampling=0.0
    )
    await proxy.start()
    try:
        await eventually(lambda: proxy.core.active.routes, what="the proxy's first config")
        client = await H2Client.connect("127.0.0.1", proxy.bound["outbound"].port)
        try:
            response = await client.request("/h2?x=1", headers=[("traceparent", SAMPLED)])
        finally:
            await client.close()
        assert response.status == 200
        [hop] = await eventually(lambda: receiver.trace(TRACE))
    finally:
        await proxy.stop()

    assert hop.parent_span_id == CLIENT_SPAN
    assert hop.attributes["network.protocol.version"] == "2"
    assert hop.attributes["url.path"] == "/h2"
    [seen] = [r for r in h2_mesh.v1.seen + h2_mesh.v2.seen if r["path"] == "/h2?x=1"]
    assert seen["headers"]["traceparent"] == f"00-{TRACE}-{hop.span_id}-01"
