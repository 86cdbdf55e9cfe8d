"""Heads as received: `raw_head`, `host` and `forwardable` on the parsers' events, which
let a proxy forward a head that needs no change without writing it again."""

from __future__ import annotations

import pytest

from mycelium.proxy.protocols.http1 import (
    RequestParser,
    RequestReceived,
    ResponseParser,
    ResponseReceived,
)


def request(raw: bytes) -> RequestReceived:
    head = RequestParser().feed(raw)[0]
    assert isinstance(head, RequestReceived)
    return head


def response(raw: bytes, method: bytes = b"GET") -> ResponseReceived:
    parser = ResponseParser()
    parser.expect(method)
    head = parser.feed(raw)[0]
    assert isinstance(head, ResponseReceived)
    return head


def test_a_plain_request_comes_with_its_exact_head_and_host() -> None:
    raw = b"GET /a?b=1 HTTP/1.1\r\nHost: Backend:8080\r\nUser-Agent: t  \r\n\r\n"
    head = request(raw)
    assert head.raw_head == raw
    assert head.host == b"Backend:8080"
    assert head.forwardable


def test_empty_lines_before_a_request_are_not_part_of_its_head() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert request(b"\r\n" + raw).raw_head == raw


@pytest.mark.parametrize(
    "fields",
    [
        b"Content-Length: 3\r\n",
        b"Connection: keep-alive\r\n",
        b"Connection: Keep-Alive\r\n",
    ],
)
def test_a_request_whose_fields_need_no_change_is_forwardable(fields: bytes) -> None:
    assert request(b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n").forwardable


@pytest.mark.parametrize(
    "fields",
    [
        b"Connection: close\r\n",
        b"Connection: keep-alive, x-private\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"TE: trailers\r\n",
        b"Keep-Alive: timeout=5\r\n",
        b"Proxy-Authorization: Basic eDp5\r\n",
        b"Content-Length: 3\r\nExpect: 100-continue\r\n",
        b"Connection: upgrade\r\nUpgrade: websocket\r\n",
    ],
)
def test_a_request_with_hop_by_hop_fields_is_not_forwardable(fields: bytes) -> None:
    assert not request(b"POST / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n").forwardable


def test_an_http_1_0_request_is_not_forwardable() -> None:
    assert not request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").forwardable


def test_raw_heads_do_not_take_part_in_event_equality() -> None:
    first = request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    second = request(b"GET / HTTP/1.1\r\nhost:   a\r\n\r\n")
    assert first == second
    assert first.raw_head != second.raw_head


def test_a_typical_response_is_forwardable_with_its_exact_head() -> None:
    raw = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
    head = response(raw + b"ok")
    assert head.raw_head == raw
    assert head.forwardable


def test_a_chunked_response_is_forwardable() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert response(raw + b"2\r\nok\r\n0\r\n\r\n").forwardable


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ],
)
def test_a_response_that_must_change_is_not_forwardable(raw: bytes) -> None:
    assert not response(raw).forwardable
