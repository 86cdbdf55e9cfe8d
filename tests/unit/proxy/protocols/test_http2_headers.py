"""Header blocks between HTTP/2 and the proxy's `(name, value)` lists: pseudo-headers
split off and put back first, connection-specific fields dropped (RFC 9113 section
8.2.2), and the proxy's own answers for plain and gRPC clients."""

from __future__ import annotations

import pytest

from mycelium.proxy.protocols.http2 import (
    Http2RequestError,
    grpc_timeout,
    local_reply_blocks,
    parse_request,
    parse_response,
    request_block,
    response_block,
)


def test_a_request_block_splits_into_pseudo_headers_and_fields() -> None:
    request = parse_request(
        [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"reviews:9080"),
            (b":path", b"/books?id=7"),
            (b"content-type", b"application/grpc"),
            (b"x-request-id", b"1"),
        ]
    )
    assert (request.method, request.scheme, request.authority, request.path) == (
        b"POST",
        b"http",
        b"reviews:9080",
        b"/books?id=7",
    )
    assert request.headers == [(b"content-type", b"application/grpc"), (b"x-request-id", b"1")]
    assert request.is_grpc


def test_host_stands_in_for_a_missing_authority() -> None:
    request = parse_request([(b":method", b"GET"), (b":path", b"/"), (b"host", b"reviews")])
    assert request.authority == b"reviews"
    assert request.scheme == b"http"
    assert request.headers == []


@pytest.mark.parametrize(
    ("block", "complaint"),
    [
        ([(b":path", b"/"), (b":authority", b"a")], ":method"),
        ([(b":method", b"GET"), (b":authority", b"a")], ":path"),
        ([(b":method", b"GET"), (b":path", b"/")], ":authority"),
        ([(b":method", b"CONNECT"), (b":authority", b"a:1")], "CONNECT"),
    ],
)
def test_a_request_that_cannot_be_routed_is_refused(
    block: list[tuple[bytes, bytes]], complaint: str
) -> None:
    with pytest.raises(Http2RequestError, match=complaint):
        parse_request(block)


def test_the_upstream_block_puts_pseudo_headers_first_and_drops_connection_fields() -> None:
    block = request_block(
        b"GET",
        b"http",
        b"reviews:9080",
        b"/",
        [
            (b"connection", b"keep-alive"),
            (b"keep-alive", b"5"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"te", b"trailers"),
            (b"x-kept", b"yes"),
        ],
    )
    assert block == [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"reviews:9080"),
        (b":path", b"/"),
        (b"te", b"trailers"),
        (b"x-kept", b"yes"),
    ]


def test_te_other_than_trailers_does_not_cross() -> None:
    assert request_block(b"GET", b"http", b"a", b"/", [(b"te", b"gzip")])[4:] == []


def test_a_response_block_round_trips() -> None:
    block = response_block(201, [(b"x-a", b"1"), (b"connection", b"close")])
    assert block == [(b":status", b"201"), (b"x-a", b"1")]
    assert parse_response(block) == (201, [(b"x-a", b"1")])


def test_a_plain_local_reply_says_why_in_a_header_and_the_body() -> None:
    block, body = local_reply_blocks(503, "unknown_service", "no service x", grpc=False)
    assert block[0] == (b":status", b"503")
    assert (b"x-mycelium-reason", b"unknown_service") in block
    assert (b"content-length", str(len(body)).encode()) in block
    assert body == b"unknown_service: no service x\n"


@pytest.mark.parametrize(("status", "grpc_status"), [(503, b"14"), (504, b"4"), (404, b"12")])
def test_a_grpc_local_reply_is_trailers_only(status: int, grpc_status: bytes) -> None:
    block, body = local_reply_blocks(status, "upstream_timeout", "late: 100% ✗", grpc=True)
    assert body == b""
    fields = dict(block)
    assert fields[b":status"] == b"200"  # the gRPC spec: errors ride on HTTP 200
    assert fields[b"content-type"] == b"application/grpc"
    assert fields[b"grpc-status"] == grpc_status
    assert fields[b"grpc-message"] == b"upstream_timeout: late: 100%25 %E2%9C%97"
    assert fields[b"x-mycelium-reason"] == b"upstream_timeout"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"250m", 0.25), (b"2S", 2.0), (b"1M", 60.0), (b"5u", 5e-6), (b"x", None), (b"12", None)],
)
def test_grpc_timeout_is_read_in_its_units(value: bytes, seconds: float | None) -> None:
    assert grpc_timeout([(b"grpc-timeout", value)]) == seconds
