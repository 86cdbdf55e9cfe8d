"""Fuzzing the HTTP/1.1 parsers: whatever the bytes and however they are split, only an
`Http1Error` may escape, every call returns, and a valid message split anywhere gives the
events it gives whole."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.proxy.protocols.errors import Http1Error
from mycelium.proxy.protocols.http1 import (
    DataReceived,
    Event,
    Http1Limits,
    MessageEnded,
    RequestParser,
    RequestReceived,
    ResponseParser,
    ResponseReceived,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
    encode_response_head,
)

# Small limits, so that random inputs reach them too.
LIMITS = Http1Limits(
    max_header_bytes=512, max_header_count=8, max_uri_bytes=64, max_chunk_line_bytes=24
)
FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)

SEEDS = [
    b"GET /a?b=c HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x00",
    b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
]
# Bytes that matter to the grammar, so that mutations hit its edges.
SPECIAL = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b";", b"\x00", b"0", b"f", b"\xff", b"-", b","]
)


def splits(data: st.DataObject, wire: bytes) -> list[bytes]:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=8)))
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def feed_all(parser: RequestParser | ResponseParser, pieces: list[bytes]) -> list[Event]:
    events: list[Event] = []
    try:
        for piece in pieces:
            events += parser.feed(piece)
        events += parser.feed_eof()
    except Http1Error:
        pass  # the only exception allowed out
    return events


def response_parser() -> ResponseParser:
    parser = ResponseParser(LIMITS)
    for method in (b"GET", b"HEAD", b"POST", b"CONNECT"):
        parser.expect(method)
    return parser


@FUZZ
@given(st.binary(max_size=600), st.data())
def test_random_bytes_raise_nothing_but_http1_errors(wire: bytes, data: st.DataObject) -> None:
    feed_all(RequestParser(LIMITS), splits(data, wire))
    feed_all(response_parser(), splits(data, wire))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(wire)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        if action == "insert":
            wire[at:at] = draw(SPECIAL | st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del wire[at : at + draw(st.integers(1, 4))]
        elif action == "replace" and at < len(wire):
            wire[at : at + 1] = draw(SPECIAL)
        else:
            wire[at:at] = wire[at : at + draw(st.integers(1, 40))] * draw(st.integers(1, 30))
    return bytes(wire)


@FUZZ
@given(mutated(), st.data())
def test_mutated_messages_raise_nothing_but_http1_errors(wire: bytes, data: st.DataObject) -> None:
    feed_all(RequestParser(LIMITS), splits(data, wire))
    feed_all(response_parser(), splits(data, wire))


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if isinstance(event, DataReceived) and out and isinstance(out[-1], DataReceived):
            out[-1] = DataReceived(data=out[-1].data + event.data)
        else:
            out.append(event)
    return out


TOKENS = st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12).map(str.encode)
VALUES = st.binary(max_size=30).map(
    lambda v: bytes(b for b in v if b >= 0x20 and b != 0x7F).strip(b" ")
)
FIELDS = st.lists(st.tuples(TOKENS.map(lambda n: b"x-" + n), VALUES), max_size=5)
BODIES = st.lists(st.binary(min_size=1, max_size=40), max_size=4)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH"]))
    target = b"/" + draw(TOKENS)
    fields = [(b"host", draw(TOKENS)), *draw(FIELDS)]
    chunks = draw(BODIES)
    if draw(st.booleans()):
        fields.append((b"transfer-encoding", b"chunked"))
        trailers = draw(FIELDS)
        body = b"".join(encode_chunk(c) for c in chunks) + encode_last_chunk(trailers)
    else:
        body = b"".join(chunks)
        fields.append((b"content-length", b"%d" % len(body)))
    return encode_request_head(method, target, fields) + body


@FUZZ
@given(st.lists(requests(), min_size=1, max_size=3), st.data())
def test_valid_requests_split_anywhere_give_the_events_they_give_whole(
    wires: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(wires)
    whole = RequestParser().feed(wire)
    assert sum(isinstance(e, RequestReceived) for e in whole) == len(wires)
    assert sum(isinstance(e, MessageEnded) for e in whole) == len(wires)
    parser = RequestParser()
    split: list[Event] = []
    for piece in splits(data, wire):
        split += parser.feed(piece)
    assert merged(split) == merged(whole)


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 201, 404, 500, 503]))
    fields = draw(FIELDS)
    chunks = draw(BODIES)
    if draw(st.booleans()):
        fields.append((b"transfer-encoding", b"chunked"))
        body = b"".join(encode_chunk(c) for c in chunks) + encode_last_chunk(draw(FIELDS))
    else:
        body = b"".join(chunks)
        fields.append((b"content-length", b"%d" % len(body)))
    interim = encode_response_head(100, b"Continue", []) if draw(st.booleans()) else b""
    return interim + encode_response_head(status, b"Reason", fields) + body


@FUZZ
@given(st.lists(responses(), min_size=1, max_size=3), st.data())
def test_valid_responses_split_anywhere_give_the_events_they_give_whole(
    wires: list[bytes], data: st.DataObject
) -> None:
    wire = b"".join(wires)

    def parser() -> ResponseParser:
        fresh = ResponseParser()
        for _ in wires:
            fresh.expect(b"GET")
        return fresh

    whole = parser().feed(wire)
    finals = [e for e in whole if isinstance(e, ResponseReceived) and e.status >= 200]
    assert len(finals) == len(wires)
    split_parser = parser()
    split: list[Event] = []
    for piece in splits(data, wire):
        split += split_parser.feed(piece)
    assert merged(split) == merged(whole)
