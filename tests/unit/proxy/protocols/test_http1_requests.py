"""Requests as a client sends them, through `RequestParser`: heads, bodies, keep-alive,
pipelining, upgrades and CONNECT. No sockets: bytes in, events out."""

from __future__ import annotations

import dataclasses

import pytest

from mycelium.proxy.protocols.errors import DownstreamProtocolError
from mycelium.proxy.protocols.http1 import (
    CHUNKED,
    NO_BODY,
    DataReceived,
    Event,
    Framing,
    MessageEnded,
    RequestParser,
    RequestReceived,
)

GET = b"GET /reviews/42?lang=en HTTP/1.1\r\nHost: reviews.shop\r\nAccept: */*\r\n\r\n"


def merged(events: list[Event]) -> list[Event]:
    """Events with adjacent body pieces joined: where a body is cut depends on reads."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataReceived) and out and isinstance(out[-1], DataReceived):
            out[-1] = DataReceived(data=out[-1].data + event.data)
        else:
            out.append(event)
    return out


def test_a_get_is_a_head_then_its_end() -> None:
    events = RequestParser().feed(GET)
    assert events == [
        RequestReceived(
            method=b"GET",
            target=b"/reviews/42?lang=en",
            http_version=b"1.1",
            headers=[(b"host", b"reviews.shop"), (b"accept", b"*/*")],
            keep_alive=True,
            framing=NO_BODY,
            expect_continue=False,
            upgrade=None,
        ),
        MessageEnded(trailers=[]),
    ]


def test_field_names_are_lowercased_and_values_trimmed_with_order_and_repeats_kept() -> None:
    request = (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Trace:  \t one \t\r\nSet-Thing: 1\r\n"
        b"x-trace: two\r\nEmpty:\r\nObs-Text: caf\xe9\r\n\r\n"
    )
    (head, _) = RequestParser().feed(request)
    assert isinstance(head, RequestReceived)
    assert head.headers == [
        (b"host", b"a"),
        (b"x-trace", b"one"),
        (b"set-thing", b"1"),
        (b"x-trace", b"two"),
        (b"empty", b""),
        (b"obs-text", b"caf\xe9"),
    ]


def test_events_are_frozen_values() -> None:
    (head, end) = RequestParser().feed(GET)
    assert isinstance(head, RequestReceived)
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.method = b"POST"  # type: ignore[misc]
    with pytest.raises(TypeError):
        RequestReceived(b"GET")  # type: ignore[call-arg]  # keyword-only
    assert end == MessageEnded(trailers=[])


def test_pipelined_requests_come_out_in_order() -> None:
    post = b"POST /orders HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"PUT /cart HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nChecksum: x\r\n\r\n"
    )
    events = RequestParser().feed(GET + post + chunked + GET)
    kinds = [(type(e).__name__, getattr(e, "method", None)) for e in events]
    assert kinds == [
        ("RequestReceived", b"GET"),
        ("MessageEnded", None),
        ("RequestReceived", b"POST"),
        ("DataReceived", None),
        ("MessageEnded", None),
        ("RequestReceived", b"PUT"),
        ("DataReceived", None),
        ("MessageEnded", None),
        ("RequestReceived", b"GET"),
        ("MessageEnded", None),
    ]
    assert events[3] == DataReceived(data=b"hello")
    assert events[6] == DataReceived(data=b"abc")
    assert events[7] == MessageEnded(trailers=[(b"checksum", b"x")])


def test_a_request_split_at_every_byte_gives_the_same_events() -> None:
    request = (
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nDigest: sha-256=abc\r\n\r\n" + GET
    )
    whole = RequestParser().feed(request)
    for cut in range(1, len(request)):
        parser = RequestParser()
        split = parser.feed(request[:cut]) + parser.feed(request[cut:])
        assert merged(split) == whole, cut


def test_a_request_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    request = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world" + GET
    parser = RequestParser()
    events: list[Event] = []
    for i in range(len(request)):
        events += parser.feed(request[i : i + 1])
    assert merged(events) == RequestParser().feed(request)


def test_a_content_length_body_arrives_in_pieces_as_it_is_read() -> None:
    parser = RequestParser()
    head = b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
    (request,) = parser.feed(head + b"")
    assert isinstance(request, RequestReceived)
    assert request.framing == Framing(kind="length", length=10)
    assert parser.feed(b"01234") == [DataReceived(data=b"01234")]
    assert parser.feed(b"56789" + GET[:3]) == [
        DataReceived(data=b"56789"),
        MessageEnded(trailers=[]),
    ]


def test_an_empty_content_length_body_ends_with_the_head() -> None:
    (request, end) = RequestParser().feed(
        b"POST /ping HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(request, RequestReceived)
    assert request.framing == Framing(kind="length", length=0)
    assert end == MessageEnded(trailers=[])


def test_the_chunks_of_one_read_come_as_one_piece_with_extensions_dropped() -> None:
    request = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b'4;ext\r\nWiki\r\n5 ; a = "q \\" d" ;b=c\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n'
        b"0\r\n\r\n"
    )
    (head, data, end) = RequestParser().feed(request)
    assert isinstance(head, RequestReceived)
    assert head.framing == CHUNKED
    assert data == DataReceived(data=b"Wikipedia in\r\n\r\nchunks.")
    assert end == MessageEnded(trailers=[])


def test_trailers_come_with_the_end_lowercased_and_trimmed() -> None:
    request = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\nGrpc-Status: 0 \r\nGrpc-Message:  fine\r\n\r\n"
    )
    events = RequestParser().feed(request)
    assert events[-1] == MessageEnded(trailers=[(b"grpc-status", b"0"), (b"grpc-message", b"fine")])


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, CLOSE", False),
        (b"1.1", b"keep-alive", True),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
    ],
)
def test_keep_alive_follows_the_version_and_the_connection_field(
    version: bytes, connection: bytes | None, keep_alive: bool
) -> None:
    fields = b"Host: a\r\n" + (b"Connection: " + connection + b"\r\n" if connection else b"")
    (head, _) = RequestParser().feed(b"GET / HTTP/" + version + b"\r\n" + fields + b"\r\n")
    assert isinstance(head, RequestReceived)
    assert head.http_version == version
    assert head.keep_alive is keep_alive


def test_after_a_request_that_closes_the_connection_parsing_stops() -> None:
    parser = RequestParser()
    closing = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    events = parser.feed(closing + GET)
    assert len(events) == 2
    assert parser.stopped
    assert parser.feed(b"more") == []
    assert parser.take_remaining() == GET + b"more"


def test_an_http_1_0_request_without_host_is_fine() -> None:
    (head, _) = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(head, RequestReceived)
    assert head.headers == []
    assert head.keep_alive is False


def test_an_absolute_form_target_is_kept_for_the_router() -> None:
    request = b"GET http://reviews.shop:9080/a?b=c HTTP/1.1\r\nHost: reviews.shop:9080\r\n\r\n"
    (head, _) = RequestParser().feed(request)
    assert isinstance(head, RequestReceived)
    assert head.target == b"http://reviews.shop:9080/a?b=c"


def test_one_empty_line_before_a_request_is_ignored() -> None:
    events = RequestParser().feed(b"\r\n" + GET)
    assert isinstance(events[0], RequestReceived)


def test_expect_continue_is_reported_when_a_body_is_awaited() -> None:
    parser = RequestParser()
    head = b"PUT /a HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    (request,) = parser.feed(head)
    assert isinstance(request, RequestReceived)
    assert request.expect_continue
    assert parser.feed(b"ok") == [DataReceived(data=b"ok"), MessageEnded(trailers=[])]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",  # no body to wait for
        b"PUT /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",  # 1.0
        b"PUT /a HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\n",
    ],
)
def test_expect_continue_is_not_reported_where_it_means_nothing(head: bytes) -> None:
    request = RequestParser().feed(head)[0]
    assert isinstance(request, RequestReceived)
    assert not request.expect_continue


def test_an_upgrade_request_stops_the_parser_after_its_head() -> None:
    parser = RequestParser()
    head = (
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    events = parser.feed(head + b"\x81\x05hello")
    assert isinstance(events[0], RequestReceived)
    assert events[0].upgrade == b"websocket"
    assert events[1:] == [MessageEnded(trailers=[])]
    assert parser.stopped
    assert parser.feed(b"\x81\x01!") == []
    assert parser.take_remaining() == b"\x81\x05hello\x81\x01!"
    assert parser.take_remaining() == b""


def test_an_upgrade_request_with_a_body_stops_after_the_body() -> None:
    parser = RequestParser()
    request = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 3\r\n\r\nabc"
    )
    events = parser.feed(request + b"PRI * HTTP/2.0")
    assert [type(e) for e in events] == [RequestReceived, DataReceived, MessageEnded]
    assert parser.take_remaining() == b"PRI * HTTP/2.0"


def test_a_declined_upgrade_leaves_http_1_bytes_for_a_new_parser() -> None:
    parser = RequestParser()
    head = b"GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    parser.feed(head + GET)
    # The upstream answered 200 instead of 101: the client goes on speaking HTTP/1.1.
    again = RequestParser()
    events = again.feed(parser.take_remaining())
    assert isinstance(events[0], RequestReceived)
    assert events[0].target == b"/reviews/42?lang=en"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",  # Connection lacks it
        b"GET /a HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",  # RFC 9110 7.8
    ],
)
def test_an_upgrade_field_alone_is_not_an_upgrade(head: bytes) -> None:
    parser = RequestParser()
    events = parser.feed(head)
    assert isinstance(events[0], RequestReceived)
    assert events[0].upgrade is None
    assert parser.stopped == (not events[0].keep_alive)


def test_connect_stops_the_parser_and_leaves_the_tunnel_bytes() -> None:
    parser = RequestParser()
    events = parser.feed(
        b"CONNECT reviews.shop:443 HTTP/1.1\r\nHost: reviews.shop:443\r\n\r\n\x16\x03\x01"
    )
    assert isinstance(events[0], RequestReceived)
    assert events[0].method == b"CONNECT"
    assert events[0].target == b"reviews.shop:443"
    assert events[0].framing == NO_BODY
    assert events[1:] == [MessageEnded(trailers=[])]
    assert parser.stopped
    assert parser.take_remaining() == b"\x16\x03\x01"


def test_the_end_of_the_stream_between_requests_is_clean() -> None:
    parser = RequestParser()
    parser.feed(GET)
    assert parser.feed_eof() == []
    assert parser.stopped


def test_the_end_of_the_stream_inside_a_request_is_an_incomplete_message() -> None:
    parser = RequestParser()
    parser.feed(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(DownstreamProtocolError) as caught:
        parser.feed_eof()
    assert (caught.value.status, caught.value.reason) == (400, "incomplete_message")


def test_after_an_error_the_parser_keeps_raising_it() -> None:
    parser = RequestParser()
    with pytest.raises(DownstreamProtocolError) as first:
        parser.feed(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
    with pytest.raises(DownstreamProtocolError) as second:
        parser.feed(GET)
    assert second.value is first.value


def test_the_events_of_a_call_that_fails_are_dropped() -> None:
    parser = RequestParser()
    with pytest.raises(DownstreamProtocolError):
        parser.feed(GET + b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
