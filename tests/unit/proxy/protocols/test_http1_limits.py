"""The limits on what a peer can make one connection parse or hold: where each one falls,
and that it is enforced before the bytes past it are buffered."""

from __future__ import annotations

import pytest

from mycelium.errors import ConfigError
from mycelium.proxy.protocols.errors import DownstreamProtocolError
from mycelium.proxy.protocols.http1 import (
    DEFAULT_LIMITS,
    MAX_CHUNK_LINE_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_URI_BYTES,
    Http1Limits,
    MessageEnded,
    RequestParser,
    RequestReceived,
)

CHUNKED = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def refusal(parser: RequestParser, wire: bytes) -> tuple[int, str]:
    with pytest.raises(DownstreamProtocolError) as caught:
        parser.feed(wire)
    return caught.value.status, caught.value.reason


def test_the_defaults_are_envoy_s_and_nginx_s() -> None:
    assert Http1Limits() == DEFAULT_LIMITS
    assert (MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_URI_BYTES) == (65536, 100, 8192)
    assert MAX_CHUNK_LINE_BYTES == 4096
    assert DEFAULT_LIMITS.max_request_body_bytes is None
    assert DEFAULT_LIMITS.max_response_body_bytes is None


@pytest.mark.parametrize(
    "bad",
    [
        {"max_header_bytes": 0},
        {"max_header_count": 0},
        {"max_uri_bytes": -1},
        {"max_chunk_line_bytes": 0},
        {"max_request_body_bytes": -1},
        {"max_response_body_bytes": -5},
    ],
)
def test_a_nonsensical_limit_is_a_config_error(bad: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        Http1Limits(**bad)


def test_a_head_exactly_at_the_limit_passes_and_one_byte_more_is_431() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"
    limits = Http1Limits(max_header_bytes=len(head) + 10)
    at_limit = head.replace(b"X: ", b"X: " + b"v" * 10)
    assert isinstance(RequestParser(limits).feed(at_limit)[0], RequestReceived)
    over = head.replace(b"X: ", b"X: " + b"v" * 11)
    assert refusal(RequestParser(limits), over) == (431, "header_too_large")


def test_a_head_that_never_ends_is_refused_once_it_passes_the_limit() -> None:
    limits = Http1Limits(max_header_bytes=1000)
    parser = RequestParser(limits)
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n")
    for _ in range(88):  # 25 + 88 * 11 = 993 bytes
        assert parser.feed(b"X-Pad: 12\r\n") == []  # 11 bytes a line; no blank line yet
    assert refusal(parser, b"X-Pad: 12\r\n" * 2) == (431, "header_too_large")


def test_an_over_long_target_is_refused_before_its_line_ends() -> None:
    limits = Http1Limits(max_uri_bytes=100)
    parser = RequestParser(limits)
    parser.feed(b"GET /" + b"a" * 99)  # 100 bytes of target: fine so far
    assert refusal(parser, b"a") == (414, "uri_too_long")


def test_a_target_exactly_at_the_limit_passes() -> None:
    limits = Http1Limits(max_uri_bytes=100)
    wire = b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert isinstance(RequestParser(limits).feed(wire)[0], RequestReceived)
    assert refusal(RequestParser(limits), wire.replace(b"/", b"//", 1)) == (414, "uri_too_long")


def test_an_over_long_target_beyond_the_head_limit_is_still_414() -> None:
    limits = Http1Limits(max_header_bytes=200, max_uri_bytes=100)
    assert refusal(RequestParser(limits), b"GET /" + b"a" * 300) == (414, "uri_too_long")


def test_a_chunk_size_line_at_the_limit_passes_and_beyond_it_is_refused() -> None:
    limits = Http1Limits(max_chunk_line_bytes=16)
    line = b"5;ext=" + b"x" * 10  # 16 bytes
    events = RequestParser(limits).feed(CHUNKED + line + b"\r\nhello\r\n0\r\n\r\n")
    assert events[-1] == MessageEnded(trailers=[])
    parser = RequestParser(limits)
    assert refusal(parser, CHUNKED + line + b"x\r\n") == (400, "bad_chunk")
    # ...and without waiting for the line's end,
    assert refusal(RequestParser(limits), CHUNKED + b"0" * 18) == (400, "bad_chunk")
    # but a line at the limit may pause between its CR and LF.
    parser = RequestParser(limits)
    assert parser.feed(CHUNKED + line + b"\r")[1:] == []
    assert parser.feed(b"\nhello\r\n0\r\n\r\n")[-1] == MessageEnded(trailers=[])


def test_a_chunk_larger_than_the_body_limit_is_refused_before_its_data() -> None:
    limits = Http1Limits(max_request_body_bytes=10)
    assert refusal(RequestParser(limits), CHUNKED + b"b\r\n") == (413, "body_too_large")
    events = RequestParser(limits).feed(CHUNKED + b"a\r\n0123456789\r\n0\r\n\r\n")
    assert events[-1] == MessageEnded(trailers=[])


def test_trailers_count_against_the_field_limits() -> None:
    limits = Http1Limits(max_header_count=3, max_header_bytes=200)
    many = b"".join(b"T%d: v\r\n" % i for i in range(4))
    assert refusal(RequestParser(limits), CHUNKED + b"0\r\n" + many + b"\r\n") == (
        431,
        "too_many_headers",
    )
    big = b"T: " + b"v" * 200 + b"\r\n"
    assert refusal(RequestParser(limits), CHUNKED + b"0\r\n" + big + b"\r\n") == (
        431,
        "header_too_large",
    )
