"""Hostile and malformed requests: each is refused with the status and reason the proxy
answers, and a well-formed request on a fresh parser still works.

Each case also pins what llhttp (through httptools, strict by default) does with the same
bytes on its own: where it refuses, we name its refusal; where it is lenient (None), the
refusal is ours. A change of httptools that loosens a check shows up here first.
"""

from __future__ import annotations

from dataclasses import dataclass

import httptools
import pytest

from mycelium.proxy.protocols.errors import DownstreamProtocolError, Http1Reason
from mycelium.proxy.protocols.http1 import (
    Http1Limits,
    MessageEnded,
    RequestParser,
    RequestReceived,
)

GOOD = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
POST_CHUNKED = b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@dataclass(frozen=True)
class Case:
    wire: bytes
    reason: Http1Reason
    status: int
    llhttp: str | None
    """httptools' own verdict: part of its error message, or None when it accepts."""


def head(*fields: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


SMUGGLING: Http1Reason = "request_smuggling"
CASES: dict[str, Case] = {
    # --- framing: Content-Length against Transfer-Encoding (RFC 9112 section 6.3) -------------
    "content-length then transfer-encoding": Case(
        head(b"Host: a", b"Content-Length: 5", b"Transfer-Encoding: chunked") + b"0\r\n\r\n",
        SMUGGLING,
        400,
        "can't be present with Content-Length",
    ),
    "transfer-encoding then content-length": Case(
        head(b"Host: a", b"Transfer-Encoding: chunked", b"Content-Length: 5") + b"0\r\n\r\n",
        SMUGGLING,
        400,
        "can't be present with Transfer-Encoding",
    ),
    "content-length twice, different": Case(
        head(b"Host: a", b"Content-Length: 5", b"Content-Length: 6") + b"hello",
        SMUGGLING,
        400,
        "Duplicate Content-Length",
    ),
    # Identical duplicates are refused too: RFC 9110 section 8.6 allows it, no sane
    # client sends them, and every hop must agree on exactly one length.
    "content-length twice, identical": Case(
        head(b"Host: a", b"Content-Length: 5", b"Content-Length: 5") + b"hello",
        SMUGGLING,
        400,
        "Duplicate Content-Length",
    ),
    "content-length as a list": Case(
        head(b"Host: a", b"Content-Length: 5, 5") + b"hello",
        "bad_content_length",
        400,
        "Invalid character in Content-Length",
    ),
    "content-length with a sign": Case(
        head(b"Host: a", b"Content-Length: +5") + b"hello",
        "bad_content_length",
        400,
        "Invalid character in Content-Length",
    ),
    "content-length negative": Case(
        head(b"Host: a", b"Content-Length: -1"),
        "bad_content_length",
        400,
        "Invalid character in Content-Length",
    ),
    "content-length overflowing": Case(
        head(b"Host: a", b"Content-Length: 99999999999999999999999"),
        "bad_content_length",
        400,
        "Content-Length overflow",
    ),
    "transfer-encoding chunked, identity": Case(
        head(b"Host: a", b"Transfer-Encoding: chunked, identity") + b"0\r\n\r\n",
        SMUGGLING,
        400,
        "Invalid `Transfer-Encoding` header value",
    ),
    "transfer-encoding xchunked": Case(
        head(b"Host: a", b"Transfer-Encoding: xchunked") + b"0\r\n\r\n",
        SMUGGLING,
        400,
        "Request has invalid `Transfer-Encoding`",
    ),
    "transfer-encoding identity": Case(
        head(b"Host: a", b"Transfer-Encoding: identity"),
        SMUGGLING,
        400,
        "Request has invalid `Transfer-Encoding`",
    ),
    "transfer-encoding chunked, chunked": Case(
        head(b"Host: a", b"Transfer-Encoding: chunked, chunked") + b"0\r\n\r\n",
        SMUGGLING,
        400,
        "Invalid `Transfer-Encoding` header value",
    ),
    "transfer-encoding chunked in two fields": Case(
        head(b"Host: a", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
        SMUGGLING,
        400,
        "Invalid `Transfer-Encoding` header value",
    ),
    "transfer-encoding gzip, chunked": Case(
        head(b"Host: a", b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n",
        "unsupported_transfer_coding",
        501,
        None,
    ),
    "transfer-encoding on HTTP/1.0": Case(
        head(b"Transfer-Encoding: chunked", line=b"POST / HTTP/1.0") + b"0\r\n\r\n",
        SMUGGLING,
        400,
        None,
    ),
    "connect with a body": Case(
        head(b"Host: a:443", b"Content-Length: 3", line=b"CONNECT a:443 HTTP/1.1") + b"abc",
        "bad_request",
        400,
        None,  # llhttp takes the body as the tunnel's first bytes
    ),
    # --- chunk sizes (llhttp never sees our bodies; its verdict is for the record) ------
    "chunk size not hex": Case(
        POST_CHUNKED + b"zz\r\n", "bad_chunk", 400, "Invalid character in chunk size"
    ),
    "chunk size negative": Case(
        POST_CHUNKED + b"-5\r\nhello\r\n", "bad_chunk", 400, "Invalid character in chunk size"
    ),
    "chunk size with 0x": Case(
        POST_CHUNKED + b"0x5\r\nhello\r\n", "bad_chunk", 400, "Invalid character in chunk size"
    ),
    "chunk size overflowing 64 bits": Case(
        POST_CHUNKED + b"1" + b"0" * 16 + b"\r\n", "bad_chunk", 400, "Chunk size overflow"
    ),
    "chunk size line of 5000 zeros": Case(
        POST_CHUNKED + b"0" * 5000 + b"5\r\nhello\r\n0\r\n\r\n", "bad_chunk", 400, None
    ),
    "chunk extension of 5000 bytes": Case(
        POST_CHUNKED + b"5;x=" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n", "bad_chunk", 400, None
    ),
    "chunk size followed by a space": Case(
        POST_CHUNKED + b"5 \r\nhello\r\n0\r\n\r\n",
        "bad_chunk",
        400,
        "Invalid character in chunk size",
    ),
    "chunk size line ending in LF alone": Case(
        POST_CHUNKED + b"5\nhello\r\n0\r\n\r\n",
        "bare_lf",
        400,
        "Missing expected CR after chunk size",
    ),
    "chunk data longer than its size": Case(
        POST_CHUNKED + b"5\r\nhelloXX\r\n0\r\n\r\n",
        "bad_chunk",
        400,
        "Expected LF after chunk data",
    ),
    "chunk data ending in LF alone": Case(
        POST_CHUNKED + b"5\r\nhello\n0\r\n\r\n",
        "bare_lf",
        400,
        "Missing expected CR after chunk data",
    ),
    # --- line endings and folding -----------------------------------------------------------
    "obs-fold with a space": Case(
        head(b"Host: a", b"X-Long: first", b" continued"),
        "obsolete_line_folding",
        400,
        "Unexpected whitespace after header value",
    ),
    "obs-fold with a tab": Case(
        head(b"Host: a", b"X-Long: first", b"\tcontinued"),
        "obsolete_line_folding",
        400,
        "Unexpected whitespace after header value",
    ),
    "bare LF after a field": Case(
        b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
        "bare_lf",
        400,
        "Missing expected CR after header value",
    ),
    "bare LF after the request line": Case(
        b"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare_lf", 400, "Expected CRLF after version"
    ),
    "bare LF everywhere": Case(
        b"GET / HTTP/1.1\nHost: a\n\n", "bare_lf", 400, "Expected CRLF after version"
    ),
    # --- field names and values ---------------------------------------------------------------
    "space inside a field name": Case(
        head(b"Host: a", b"X Y: v"), "bad_header_name", 400, "Invalid header token"
    ),
    "whitespace between name and colon": Case(
        head(b"Host: a", b"X-Y : v"), "bad_header_name", 400, "Invalid header token"
    ),
    "tab between name and colon": Case(
        head(b"Host: a", b"X-Y\t: v"), "bad_header_name", 400, "Invalid header token"
    ),
    "empty field name": Case(
        head(b"Host: a", b": v"), "bad_header_name", 400, "Invalid header token"
    ),
    "parenthesis in a field name": Case(
        head(b"Host: a", b"X(Y): v"), "bad_header_name", 400, "Invalid header token"
    ),
    "non-ASCII field name": Case(
        head(b"Host: a", b"X-\xe9: v"), "bad_header_name", 400, "Invalid header token"
    ),
    "field line without a colon": Case(
        head(b"Host: a", b"NoColon"), "bad_header_name", 400, "Invalid header token"
    ),
    "NUL in a value": Case(
        head(b"Host: a", b"X: a\x00b"), "bad_header_value", 400, "Invalid header value char"
    ),
    "CR alone in a value": Case(
        head(b"Host: a", b"X: a\rb"),
        "bad_header_value",
        400,
        "Missing expected LF after header value",
    ),
    "control byte in a value": Case(
        head(b"Host: a", b"X: a\x01b"), "bad_header_value", 400, "Invalid header value char"
    ),
    "DEL in a value": Case(
        head(b"Host: a", b"X: a\x7fb"), "bad_header_value", 400, "Invalid header value char"
    ),
    # --- the request line ---------------------------------------------------------------------
    "two spaces after the method": Case(
        head(b"Host: a", line=b"GET  / HTTP/1.1"), "bad_request", 400, None
    ),
    "space inside the target": Case(
        head(b"Host: a", line=b"GET /a b HTTP/1.1"), "bad_request", 400, "Expected HTTP/"
    ),
    "space after the version": Case(
        head(b"Host: a", line=b"GET / HTTP/1.1 "), "bad_request", 400, "Expected CRLF after version"
    ),
    "RTSP instead of HTTP": Case(
        head(b"Host: a", line=b"GET / RTSP/1.0"), "bad_request", 400, None
    ),
    "non-ASCII in the target": Case(
        head(b"Host: a", line=b"GET /caf\xe9 HTTP/1.1"), "bad_request", 400, "Invalid char in url"
    ),
    "TLS ClientHello on a plaintext port": Case(
        bytes.fromhex("160301020001"), "bad_request", 400, "Invalid method encountered"
    ),
    "binary garbage": Case(b"\x00\xff\x00\xff\r\n\r\n", "bad_request", 400, "Invalid method"),
    "unknown method": Case(
        head(b"Host: a", line=b"BREW /pot HTTP/1.1"),
        "unsupported_method",
        501,
        "Invalid method encountered",
    ),
    "lowercase method": Case(
        head(b"Host: a", line=b"get / HTTP/1.1"),
        "unsupported_method",
        501,
        "Invalid method encountered",
    ),
    "HTTP/1.2": Case(
        head(b"Host: a", line=b"GET / HTTP/1.2"), "unsupported_version", 505, "Invalid HTTP version"
    ),
    "HTTP/2.0 as text": Case(
        head(b"Host: a", line=b"GET / HTTP/2.0"), "unsupported_version", 505, None
    ),
    "HTTP/0.9 request line": Case(b"GET /\r\n\r\n", "unsupported_version", 505, None),
    "HTTP/1.1 without Host": Case(head(b"Accept: */*"), "bad_host", 400, None),
    "two Host fields": Case(head(b"Host: a", b"Host: b"), "bad_host", 400, None),
    "several empty lines before the request": Case(b"\r\n\r\n" + GOOD, "bad_request", 400, None),
    # --- HTTP/2 --------------------------------------------------------------------------------
    "HTTP/2 preface": Case(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00",
        "http2_preface",
        505,
        "Pause on PRI/Upgrade",
    ),
}


def feed_in_two(parser: RequestParser, wire: bytes, cut: int) -> None:
    parser.feed(wire[:cut])
    parser.feed(wire[cut:])


def llhttp_verdict(wire: bytes) -> str | None:
    """Feed `wire` to a bare httptools request parser; its error message, or None."""

    class Callbacks:
        def on_url(self, url: bytes) -> None: ...
        def on_header(self, name: bytes, value: bytes) -> None: ...
        def on_body(self, body: bytes) -> None: ...

    try:
        httptools.HttpRequestParser(Callbacks()).feed_data(wire)
    except httptools.HttpParserUpgrade:
        return None
    except httptools.HttpParserError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_request_is_refused_with_its_status_and_reason(case: Case) -> None:
    with pytest.raises(DownstreamProtocolError) as caught:
        RequestParser().feed(case.wire)
    assert (caught.value.status, caught.value.reason) == (case.status, case.reason)
    assert caught.value.detail
    # ...and the next connection is not affected.
    events = RequestParser().feed(GOOD)
    assert isinstance(events[0], RequestReceived)
    assert events[1] == MessageEnded(trailers=[])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_request_is_refused_however_its_bytes_are_split(case: Case) -> None:
    for cut in range(1, len(case.wire), max(1, len(case.wire) // 40)):
        parser = RequestParser()
        with pytest.raises(DownstreamProtocolError) as caught:
            feed_in_two(parser, case.wire, cut)
        assert caught.value.reason == case.reason, cut


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_what_llhttp_alone_does_with_the_same_bytes(case: Case) -> None:
    verdict = llhttp_verdict(case.wire)
    if case.llhttp is None:
        assert verdict is None, f"llhttp now refuses this itself: {verdict}"
    else:
        assert verdict is not None, "llhttp now accepts this"
        assert case.llhttp in verdict


def test_the_http2_preface_is_recognized_however_it_arrives_and_handed_back() -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    parser = RequestParser()
    for i in range(len(preface) - 1):
        assert parser.feed(preface[i : i + 1]) == []
    with pytest.raises(DownstreamProtocolError) as caught:
        parser.feed(preface[-1:] + b"\x00\x00\x00\x04\x01")
    assert caught.value.reason == "http2_preface"
    assert parser.take_remaining() == preface + b"\x00\x00\x00\x04\x01"


def test_a_request_that_starts_like_the_preface_is_still_http1() -> None:
    parser = RequestParser()
    assert parser.feed(b"PR") == []  # could still be "PRI * HTTP/2.0"
    events = parser.feed(b"OPFIND /dav HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(events[0], RequestReceived)
    assert events[0].method == b"PROPFIND"


def test_an_oversized_head_is_431() -> None:
    limits = Http1Limits(max_header_bytes=1024)
    wire = head(b"Host: a", b"X-Big: " + b"v" * 1024)
    with pytest.raises(DownstreamProtocolError) as caught:
        RequestParser(limits).feed(wire)
    assert (caught.value.status, caught.value.reason) == (431, "header_too_large")
    assert llhttp_verdict(wire) is None


def test_too_many_fields_is_431() -> None:
    wire = head(b"Host: a", *[b"X-%d: v" % i for i in range(100)])
    with pytest.raises(DownstreamProtocolError) as caught:
        RequestParser().feed(wire)
    assert (caught.value.status, caught.value.reason) == (431, "too_many_headers")
    assert llhttp_verdict(wire) is None
    # One hundred fields, the limit, pass.
    assert RequestParser().feed(head(b"Host: a", *[b"X-%d: v" % i for i in range(99)]))


def test_an_over_long_target_is_414() -> None:
    wire = head(b"Host: a", line=b"GET /" + b"a" * 8192 + b" HTTP/1.1")
    with pytest.raises(DownstreamProtocolError) as caught:
        RequestParser().feed(wire)
    assert (caught.value.status, caught.value.reason) == (414, "uri_too_long")
    assert llhttp_verdict(wire) is None


def test_a_body_over_the_limit_is_413() -> None:
    limits = Http1Limits(max_request_body_bytes=4)
    with pytest.raises(DownstreamProtocolError) as caught:
        RequestParser(limits).feed(head(b"Host: a", b"Content-Length: 5", line=b"PUT / HTTP/1.1"))
    assert (caught.value.status, caught.value.reason) == (413, "body_too_large")
    chunked = POST_CHUNKED + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    with pytest.raises(DownstreamProtocolError) as caught:
        RequestParser(limits).feed(chunked)
    assert (caught.value.status, caught.value.reason) == (413, "body_too_large")
