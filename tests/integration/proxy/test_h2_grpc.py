"""gRPC through the caller's sidecar, with grpcio on both ends: unary calls, metadata
and trailers both ways, the server's error status intact, and the proxy's own
failures as gRPC statuses."""

from __future__ import annotations

import asyncio

import grpc
from tests.support.h2_apps import (
    DETAILS_GRPC,
    GRPC_CHAT,
    GRPC_METHOD,
    GrpcEchoServer,
    H2Mesh,
    h2_mesh,
)
from tests.support.metrics_scrape import scrape
from tests.support.polling import eventually
from tests.support.proxy_mesh import free_port_on

__all__ = ["h2_mesh"]


def call(
    target: tuple[str, int], authority: str, request: bytes, metadata: list[tuple[str, str]]
) -> tuple[bytes | None, grpc.StatusCode, str, dict[str, str]]:
    """One unary call through the proxy (grpcio's blocking API, run in a thread)."""
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"{target[0]}:{target[1]}", options=options) as channel:
        say = channel.unary_unary(GRPC_METHOD)
        try:
            reply, outcome = say.with_call(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
            return None, error.code(), error.details(), trailers  # type: ignore[attr-defined]
        return reply, outcome.code(), outcome.details() or "", dict(outcome.trailing_metadata())


async def test_a_unary_call_and_its_metadata_pass_through(h2_mesh: H2Mesh) -> None:
    reply, code, _, trailers = await asyncio.to_thread(
        call, h2_mesh.outbound, "ratings:9090", b"world", [("x-caller", "productpage")]
    )
    assert code == grpc.StatusCode.OK
    assert reply == b"hello world"
    assert trailers["x-app-trailer"] == "fine"
    [metadata] = h2_mesh.grpc_server.calls
    assert metadata["x-caller"] == "productpage"


async def test_a_streaming_calls_messages_are_counted_as_istio_counts_them(
    h2_mesh: H2Mesh,
) -> None:
    def chat() -> list[bytes]:
        options = [("grpc.default_authority", "ratings:9090"), ("grpc.enable_http_proxy", 0)]
        host, port = h2_mesh.outbound
        with grpc.insecure_channel(f"{host}:{port}", options=options) as channel:
            talk = channel.stream_stream(GRPC_CHAT)
            return list(talk(iter([b"one", b"two", b"three"]), timeout=10))

    replies = await asyncio.to_thread(chat)
    assert len(replies) == 6

    samples = await scrape(h2_mesh.mesh.caller)
    [sent] = samples["istio_request_messages_total"]
    [answered] = samples["istio_response_messages_total"]
    assert (sent.value, answered.value) == (3, 6)
    assert sent.labels["destination_service_name"] == "ratings"
    [total] = [s for s in samples["istio_requests_total"] if s.labels["request_protocol"] == "grpc"]
    assert (total.value, total.labels["grpc_response_status"]) == (1, "0")


async def test_an_error_status_from_the_server_arrives_intact(h2_mesh: H2Mesh) -> None:
    reply, code, details, trailers = await asyncio.to_thread(
        call, h2_mesh.outbound, "ratings:9090", b"x", [("fail-with", "NOT_FOUND")]
    )
    assert reply is None
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "asked to fail with NOT_FOUND"
    assert trailers["x-app-trailer"] == "sorry"


async def test_many_calls_at_once_on_one_channel(h2_mesh: H2Mesh) -> None:
    def many() -> list[bytes]:
        options = [("grpc.default_authority", "ratings:9090"), ("grpc.enable_http_proxy", 0)]
        host, port = h2_mesh.outbound
        with grpc.insecure_channel(f"{host}:{port}", options=options) as channel:
            say = channel.unary_unary(GRPC_METHOD)
            futures = [say.future(str(i).encode(), timeout=10) for i in range(100)]
            return [f.result() for f in futures]

    replies = await asyncio.to_thread(many)
    assert replies == [f"hello {i}".encode() for i in range(100)]


async def test_an_unknown_service_is_unavailable_with_the_reason(h2_mesh: H2Mesh) -> None:
    reply, code, details, trailers = await asyncio.to_thread(
        call, h2_mesh.outbound, "nonexistent:9090", b"x", []
    )
    assert reply is None
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith("unknown_service: ")
    assert trailers["x-mycelium-reason"] == "unknown_service"


async def test_a_call_crosses_two_sidecars_to_a_grpc_app(h2_mesh: H2Mesh) -> None:
    """caller → its sidecar → the details sidecar's inbound listener → the app."""
    port = free_port_on("127.0.0.1", "127.0.0.22")
    server = GrpcEchoServer("127.0.0.1", port).start()
    await h2_mesh.apply(DETAILS_GRPC.format(port=port))
    sidecar = h2_mesh.mesh.proxy(
        "details-0",
        workload="details-0",
        labels={"app": "details"},
        address="127.0.0.22",
        inbound_address="127.0.0.22",
        app_address="127.0.0.1",
    )
    await sidecar.start()
    try:
        await eventually(lambda: 9090 in sidecar.core.active.inbound_ports, what="inbound config")
        reply, code, _, trailers = await asyncio.to_thread(
            call, h2_mesh.outbound, "details:9090", b"two hops", []
        )
        failed = await asyncio.to_thread(
            call, h2_mesh.outbound, "details:9090", b"x", [("fail-with", "PERMISSION_DENIED")]
        )
    finally:
        await sidecar.stop()
        server.stop()
    assert (reply, code) == (b"hello two hops", grpc.StatusCode.OK)
    assert trailers["x-app-trailer"] == "fine"
    assert server.calls[0]["x-forwarded-for"] == "127.0.0.1"
    assert failed[1] == grpc.StatusCode.PERMISSION_DENIED
    assert sidecar.core.counters["h2_streams"] == 2
