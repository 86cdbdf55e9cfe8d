"""Writing HTTP/1.1: heads, chunks, trailers, 100 Continue; and what is never written."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mycelium.proxy.protocols.errors import LocalProtocolError
from mycelium.proxy.protocols.http1 import (
    DataReceived,
    MessageEnded,
    RequestParser,
    RequestReceived,
    ResponseParser,
    ResponseReceived,
    encode_chunk,
    encode_continue,
    encode_last_chunk,
    encode_request_head,
    encode_response_head,
)


def test_a_request_head_is_a_request_line_and_fields() -> None:
    head = encode_request_head(b"GET", b"/a?b=c", [(b"host", b"reviews"), (b"x-request-id", b"42")])
    assert head == b"GET /a?b=c HTTP/1.1\r\nhost: reviews\r\nx-request-id: 42\r\n\r\n"
    assert encode_request_head(b"GET", b"/", [], http_version=b"1.0") == b"GET / HTTP/1.0\r\n\r\n"


def test_a_response_head_is_a_status_line_and_fields() -> None:
    head = encode_response_head(404, b"Not Found", [(b"content-length", b"0")])
    assert head == b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    assert encode_response_head(200, b"", []) == b"HTTP/1.1 200 \r\n\r\n"


def test_chunks_carry_their_size_in_hex_and_an_empty_one_is_not_written() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert encode_chunk(b"") == b""  # a zero-size chunk would end the body


def test_the_last_chunk_carries_the_trailers() -> None:
    assert encode_last_chunk() == b"0\r\n\r\n"
    assert encode_last_chunk([(b"grpc-status", b"0")]) == b"0\r\ngrpc-status: 0\r\n\r\n"


def test_continue_is_the_interim_100() -> None:
    assert encode_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    parser = ResponseParser()
    parser.expect(b"PUT")
    (event,) = parser.feed(encode_continue())
    assert isinstance(event, ResponseReceived)
    assert event.status == 100


@pytest.mark.parametrize(
    "value",
    [b"a\r\nx-injected: 1", b"a\nb", b"a\rb", b"a\x00b", b"\r\n", b"ok\r\n\r\nGET / HTTP/1.1"],
)
def test_a_value_with_cr_lf_or_nul_is_refused_never_written(value: bytes) -> None:
    fields = [(b"host", b"a"), (b"x-thing", value)]
    writers: list[Callable[[], bytes]] = [
        lambda: encode_request_head(b"GET", b"/", fields),
        lambda: encode_response_head(200, b"OK", fields),
        lambda: encode_last_chunk(fields),
    ]
    for write in writers:
        with pytest.raises(LocalProtocolError) as caught:
            write()
        assert (caught.value.status, caught.value.reason) == (500, "bad_header_value")
        assert "x-thing" in caught.value.detail


@pytest.mark.parametrize(
    "name", [b"", b"x y", b"x:y", b"x-a:", b"x\r\ny", b"x\n", b"caf\xe9", b"(x)", b" x"]
)
def test_a_name_that_is_not_a_token_is_refused(name: bytes) -> None:
    encode_request_head(b"GET", b"/", [(b"x-a", b"1")])  # a good name, remembered
    with pytest.raises(LocalProtocolError) as caught:
        encode_request_head(b"GET", b"/", [(b"x-a", b"1"), (name, b"v")])
    assert caught.value.reason in {"bad_header_name", "bad_header_value"}


@pytest.mark.parametrize(
    ("method", "target", "version"),
    [
        (b"G ET", b"/", b"1.1"),
        (b"", b"/", b"1.1"),
        (b"GET", b"/a b", b"1.1"),
        (b"GET", b"", b"1.1"),
        (b"GET", b"/\r\nx: y", b"1.1"),
        (b"GET", b"/", b"2.0"),
    ],
)
def test_a_bad_request_line_is_refused(method: bytes, target: bytes, version: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request_head(method, target, [], http_version=version)


@pytest.mark.parametrize(("status", "reason"), [(99, b"x"), (600, b"x"), (200, b"O\r\nK")])
def test_a_bad_status_line_is_refused(status: int, reason: bytes) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        encode_response_head(status, reason, [])
    assert caught.value.reason == "bad_status"


def test_what_we_write_we_read_back() -> None:
    fields = [(b"host", b"a"), (b"x-list", b"1, 2"), (b"x-list", b"3"), (b"content-length", b"2")]
    events = RequestParser().feed(encode_request_head(b"POST", b"/p", fields) + b"ok")
    assert isinstance(events[0], RequestReceived)
    assert events[0].headers == fields
    assert events[1:] == [DataReceived(data=b"ok"), MessageEnded(trailers=[])]
