"""The parsers and encoders wired together the way the proxy uses them: what a client
sends is parsed, re-encoded for the upstream and parsed there into the same message; the
response travels back the same way. No sockets: the "wire" is a bytes object."""

from __future__ import annotations

from mycelium.proxy.protocols.headers import strip_hop_by_hop
from mycelium.proxy.protocols.http1 import (
    DataReceived,
    Event,
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


def forward(events: list[Event]) -> bytes:
    """Re-encode parsed messages as the proxy forwards them: hop-by-hop fields dropped,
    the framing written anew from `framing`, chunks re-chunked, trailers passed on."""
    wire: list[bytes] = []
    chunked = False
    for event in events:
        if isinstance(event, RequestReceived | ResponseReceived):
            headers = strip_hop_by_hop(event.headers)
            chunked = event.framing.kind == "chunked"
            if chunked:
                headers.append((b"transfer-encoding", b"chunked"))
            if isinstance(event, RequestReceived):
                wire.append(encode_request_head(event.method, event.target, headers))
            else:
                wire.append(encode_response_head(event.status, event.reason, headers))
        elif isinstance(event, DataReceived):
            wire.append(encode_chunk(event.data) if chunked else event.data)
        elif chunked:
            wire.append(encode_last_chunk(event.trailers))
    return b"".join(wire)


def test_a_chunked_request_with_trailers_survives_a_hop_unchanged() -> None:
    sent = (
        b"POST /upload?id=7 HTTP/1.1\r\nHost: files.shop\r\nContent-Type: text/plain\r\n"
        b"X-Trace: a\r\nX-Trace: b\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6;name=first\r\nhello \r\n"
        b"5\r\nworld\r\n"
        b"0\r\nDigest: sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=\r\nX-Count: 2\r\n\r\n"
    )
    at_proxy = RequestParser().feed(sent)
    at_upstream = RequestParser().feed(forward(at_proxy))
    assert at_upstream == at_proxy
    assert at_proxy[-1] == MessageEnded(
        trailers=[
            (b"digest", b"sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="),
            (b"x-count", b"2"),
        ]
    )


def test_pipelined_requests_survive_a_hop_in_order() -> None:
    sent = (
        b"GET /a HTTP/1.1\r\nHost: s\r\n\r\n"
        b"PUT /b HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc"
        b"DELETE /c HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
    )
    at_proxy = RequestParser().feed(sent)
    assert RequestParser().feed(forward(at_proxy)) == at_proxy


def test_hop_by_hop_fields_stop_at_the_proxy() -> None:
    sent = (
        b"GET /a HTTP/1.1\r\nHost: s\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
        b"X-Hop: 1\r\nTE: trailers\r\nX-End-To-End: 2\r\n\r\n"
    )
    at_proxy = RequestParser().feed(sent)
    (at_upstream, end) = RequestParser().feed(forward(at_proxy))
    assert isinstance(at_upstream, RequestReceived)
    assert at_upstream.headers == [(b"host", b"s"), (b"x-end-to-end", b"2")]
    assert end == MessageEnded(trailers=[])


def test_a_response_travels_back_through_the_proxy() -> None:
    upstream_sends = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nLocation: /files/7\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\nServer-Timing: db;dur=3\r\n\r\n"
    )
    from_upstream = ResponseParser()
    from_upstream.expect(b"POST")
    at_proxy = from_upstream.feed(upstream_sends)
    at_client = ResponseParser()
    at_client.expect(b"POST")
    assert at_client.feed(forward(at_proxy)) == at_proxy
    assert [type(e) for e in at_proxy] == [
        ResponseReceived,
        ResponseReceived,
        DataReceived,
        MessageEnded,
    ]
