"""An HTTP/2 stream's request as the HTTP/1.1 head it becomes upstream."""

from __future__ import annotations

from mycelium.proxy.http2.over_http1 import request_head

FIELDS = [
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"content-length", b"12"),
    (b"host", b"ratings:9090"),
]


def test_a_whole_body_is_framed_by_its_length_and_hop_by_hop_fields_stay_behind() -> None:
    head = request_head(b"POST", b"/echo.Echo/Say", FIELDS, length=7, chunked=False)
    assert head == (
        b"POST /echo.Echo/Say HTTP/1.1\r\n"
        b"content-type: application/grpc\r\n"
        b"host: ratings:9090\r\n"
        b"content-length: 7\r\n\r\n"
    )


def test_a_body_still_arriving_goes_in_chunks() -> None:
    head = request_head(b"POST", b"/upload", FIELDS, length=None, chunked=True)
    assert head.endswith(b"host: ratings:9090\r\ntransfer-encoding: chunked\r\n\r\n")
    assert b"content-length" not in head


def test_a_bodiless_request_says_nothing_of_a_body() -> None:
    head = request_head(b"GET", b"/", [(b"host", b"reviews")], length=None, chunked=False)
    assert head == b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n"
