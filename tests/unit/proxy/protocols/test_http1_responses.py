"""Responses as an upstream sends them, through `ResponseParser`: framing by the request's
method and the status, interim responses, upgrades, tunnels, and upstream errors."""

from __future__ import annotations

import httptools
import pytest

from mycelium.proxy.protocols.errors import Http1Reason, UpstreamProtocolError
from mycelium.proxy.protocols.http1 import (
    CHUNKED,
    NO_BODY,
    UNTIL_CLOSE,
    DataReceived,
    Event,
    Framing,
    Http1Limits,
    MessageEnded,
    ResponseParser,
    ResponseReceived,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def parser_for(*methods: bytes, limits: Http1Limits | None = None) -> ResponseParser:
    parser = ResponseParser() if limits is None else ResponseParser(limits)
    for method in methods:
        parser.expect(method)
    return parser


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataReceived) and out and isinstance(out[-1], DataReceived):
            out[-1] = DataReceived(data=out[-1].data + event.data)
        else:
            out.append(event)
    return out


def test_a_response_with_a_length_is_a_head_its_body_and_its_end() -> None:
    events = parser_for(b"GET").feed(OK)
    assert events == [
        ResponseReceived(
            status=200,
            reason=b"OK",
            http_version=b"1.1",
            headers=[(b"content-type", b"text/plain"), (b"content-length", b"5")],
            keep_alive=True,
            framing=Framing(kind="length", length=5),
            upgrade=False,
        ),
        DataReceived(data=b"hello"),
        MessageEnded(trailers=[]),
    ]


def test_a_response_split_at_every_byte_gives_the_same_events() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nServer-Timing: db;dur=5\r\n\r\n" + OK
    )
    whole = parser_for(b"POST", b"GET").feed(wire)
    for cut in range(1, len(wire)):
        parser = parser_for(b"POST", b"GET")
        assert merged(parser.feed(wire[:cut]) + parser.feed(wire[cut:])) == whole, cut


def test_a_head_response_has_no_body_whatever_its_content_length_says() -> None:
    parser = parser_for(b"HEAD", b"GET")
    events = parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n" + OK)
    assert isinstance(events[0], ResponseReceived)
    assert events[0].framing == NO_BODY
    assert (b"content-length", b"1234") in events[0].headers  # forwarded as is
    assert events[1] == MessageEnded(trailers=[])
    assert isinstance(events[2], ResponseReceived)  # the next response is read right
    assert events[3:] == [DataReceived(data=b"hello"), MessageEnded(trailers=[])]


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    parser = parser_for(b"GET", b"GET")
    wire = b'HTTP/1.1 %d Whatever\r\nETag: "x"\r\n\r\n' % status
    events = parser.feed(wire + OK)
    assert isinstance(events[0], ResponseReceived)
    assert (events[0].status, events[0].framing, events[0].keep_alive) == (status, NO_BODY, True)
    assert events[1] == MessageEnded(trailers=[])
    assert isinstance(events[2], ResponseReceived)


def test_interim_responses_come_before_the_final_one_without_an_end() -> None:
    parser = parser_for(b"POST")
    events = parser.feed(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + OK
    )
    statuses = [(type(e).__name__, getattr(e, "status", None)) for e in events]
    assert statuses == [
        ("ResponseReceived", 100),
        ("ResponseReceived", 103),
        ("ResponseReceived", 200),
        ("DataReceived", None),
        ("MessageEnded", None),
    ]
    assert isinstance(events[1], ResponseReceived)
    assert events[1].headers == [(b"link", b"</style.css>; rel=preload")]


def test_a_101_stops_the_parser_and_leaves_the_new_protocol_s_bytes() -> None:
    parser = parser_for(b"GET")
    events = parser.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi"
    )
    assert isinstance(events[0], ResponseReceived)
    assert (events[0].status, events[0].upgrade, events[0].keep_alive) == (101, True, False)
    assert events[1:] == [MessageEnded(trailers=[])]
    assert parser.stopped
    assert parser.feed(b"\x81\x00") == []
    assert parser.take_remaining() == b"\x81\x02hi\x81\x00"


def test_a_101_without_upgrade_fields_still_switches() -> None:
    parser = parser_for(b"GET")
    events = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\nxyz")
    assert isinstance(events[0], ResponseReceived)
    assert events[0].upgrade
    assert parser.take_remaining() == b"xyz"


def test_a_2xx_to_connect_opens_a_tunnel() -> None:
    parser = parser_for(b"CONNECT")
    events = parser.feed(b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03")
    assert isinstance(events[0], ResponseReceived)
    assert (events[0].upgrade, events[0].framing) == (True, NO_BODY)
    assert parser.take_remaining() == b"\x16\x03\x03"


def test_a_refused_connect_is_an_ordinary_response() -> None:
    parser = parser_for(b"CONNECT")
    wire = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 2\r\n\r\nno"
    events = parser.feed(wire)
    assert isinstance(events[0], ResponseReceived)
    assert not events[0].upgrade
    assert events[1:] == [DataReceived(data=b"no"), MessageEnded(trailers=[])]
    assert not parser.stopped


def test_a_body_without_length_ends_when_the_connection_does() -> None:
    parser = parser_for(b"GET")
    events = parser.feed(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nfirst ")
    assert isinstance(events[0], ResponseReceived)
    assert (events[0].framing, events[0].keep_alive) == (UNTIL_CLOSE, False)
    assert events[1:] == [DataReceived(data=b"first ")]
    assert parser.feed(b"second") == [DataReceived(data=b"second")]
    assert parser.feed_eof() == [MessageEnded(trailers=[])]
    assert parser.stopped


def test_a_chunked_response_with_trailers() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n"
    events = parser_for(b"GET").feed(wire)
    assert isinstance(events[0], ResponseReceived)
    assert events[0].framing == CHUNKED
    assert events[1:] == [DataReceived(data=b"abc"), MessageEnded(trailers=[(b"x-sum", b"9")])]


def test_responses_to_pipelined_requests_are_framed_by_their_own_method() -> None:
    parser = parser_for(b"GET", b"HEAD", b"GET")
    wire = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + OK
    events = parser.feed(wire)
    assert [type(e).__name__ for e in events] == [
        "ResponseReceived",
        "DataReceived",
        "MessageEnded",
        "ResponseReceived",
        "MessageEnded",
        "ResponseReceived",
        "DataReceived",
        "MessageEnded",
    ]


def test_a_response_that_closes_the_connection_stops_the_parser() -> None:
    parser = parser_for(b"GET", b"GET")
    wire = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    events = parser.feed(wire + OK)
    assert isinstance(events[0], ResponseReceived)
    assert not events[0].keep_alive
    assert len(events) == 2
    assert parser.stopped
    assert parser.take_remaining() == OK


def upstream_error(parser: ResponseParser, wire: bytes) -> UpstreamProtocolError:
    with pytest.raises(UpstreamProtocolError) as caught:
        parser.feed(wire)
    assert (caught.value.status, caught.value.reason) == (502, "upstream_protocol_error")
    return caught.value


@pytest.mark.parametrize(
    ("wire", "cause", "llhttp"),
    [
        # httptools reads this body until the close (RFC 9112 section 6.3, rule 4); we do
        # not decode codings, so forwarding it would hand the client a gzip stream as is.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            "unsupported_transfer_coding",
            None,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxx",
            "request_smuggling",
            None,  # llhttp reads it until the close: chunked is not last
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "request_smuggling",
            "can't be present with Content-Length",
        ),
        (b"HTTP/1.1 099 Odd\r\n\r\n", "bad_status", None),
        (b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n", "bad_status", None),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad_status", "Invalid response status"),
        (b"HTTP/2.0 200 OK\r\n\r\n", "unsupported_version", None),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", "bare_lf", "Missing expected CR"),
        (
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            "obsolete_line_folding",
            "Unexpected whitespace",
        ),
        (b"HTTP/1.1 200 OK\r\nX Y: a\r\n\r\n", "bad_header_name", "Invalid header token"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "bad_chunk",
            "Invalid character in chunk size",
        ),
        (b"<html>oops</html>", "bad_request", "Expected HTTP/"),
    ],
)
def test_what_an_upstream_gets_wrong_is_a_502_with_its_cause(
    wire: bytes, cause: Http1Reason, llhttp: str | None
) -> None:
    assert upstream_error(parser_for(b"GET"), wire).cause == cause
    try:
        httptools.HttpResponseParser(object()).feed_data(wire)
        verdict = None
    except httptools.HttpParserError as exc:
        verdict = str(exc)
    if llhttp is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert llhttp in verdict


def test_bytes_when_no_request_is_outstanding_are_unsolicited() -> None:
    error = upstream_error(ResponseParser(), b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert error.cause == "unsolicited_response"
    parser = parser_for(b"GET")
    assert len(parser.feed(OK)) == 3
    assert upstream_error(parser, OK).cause == "unsolicited_response"


def test_a_response_body_over_the_limit_is_refused() -> None:
    limits = Http1Limits(max_response_body_bytes=4)
    assert upstream_error(parser_for(b"GET", limits=limits), OK).cause == "body_too_large"
    wire = b"HTTP/1.0 200 OK\r\n\r\n"
    parser = parser_for(b"GET", limits=limits)
    parser.feed(wire + b"1234")
    assert upstream_error(parser, b"5").cause == "body_too_large"


def test_the_connection_closing_mid_body_is_an_incomplete_message() -> None:
    parser = parser_for(b"GET")
    parser.feed(OK[:-2])
    with pytest.raises(UpstreamProtocolError) as caught:
        parser.feed_eof()
    assert caught.value.cause == "incomplete_message"
    assert "incomplete_message" in str(caught.value)


def test_a_new_parser_works_after_an_upstream_error() -> None:
    upstream_error(parser_for(b"GET"), b"HTTP/1.1 200 OK\r\nX Y: a\r\n\r\n")
    assert len(parser_for(b"GET").feed(OK)) == 3
