"""The compiled fast lane for heads agrees with the full path: on generated requests and
responses, valid and not, the parser gives the same events (every attribute, the raw
head and forwardability included) and the same refusals with the lane on and off.

The lane only speeds heads up; if it accepted something the full path refuses, or read
a field differently, a proxy would disagree with itself about a message's framing."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields as dataclass_fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.proxy.protocols import head_scan, http1
from mycelium.proxy.protocols.errors import Http1Error
from mycelium.proxy.protocols.http1 import Event, Http1Limits, RequestParser, ResponseParser

LIMITS = Http1Limits(max_header_bytes=1024, max_header_count=6, max_uri_bytes=40)
SETTINGS = settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)

METHODS = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"]
ODD_METHODS = [b"get", b"FOO", b"PROPFIND", b"GET\t"]
TARGETS = [b"/", b"/a?b=c", b"/%41/x;y=1", b"/a b", b'/"q', b"/{}", b"http://a/", b"*", b"/" * 50]
NAMES = [
    b"Host",
    b"host",
    b"Content-Length",
    b"CONTENT-LENGTH",
    b"Connection",
    b"Transfer-Encoding",
    b"Upgrade",
    b"Expect",
    b"TE",
    b"Keep-Alive",
    b"Proxy-Connection",
    b"X-Trace",
    b"Accept",
    b"Bad Name",
    b"X\x00",
]
VALUES = [
    b"a",
    b"",
    b"  padded \t",
    b"12",
    b"0",
    b"+1",
    b"1 2",
    b"00000000000000000000007",
    b"chunked",
    b"Chunked",
    b"gzip, chunked",
    b"close",
    b"Keep-Alive",
    b"keep-alive, upgrade",
    b"websocket",
    b"100-continue",
    b"caf\xe9",
    b"a\x7fb",
    b"a\x01b",
    b"a\rb",
]
EOLS = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\n "])


@st.composite
def field_lines(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES), EOLS), max_size=8)
    )
    separator = draw(st.sampled_from([b": ", b":", b" : ", b":\t"]))
    return b"".join(name + separator + value + eol for name, value, eol in lines)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS + ODD_METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0"]))
    head = method + b" " + target + b" " + version + b"\r\n" + draw(field_lines()) + b"\r\n"
    return head + draw(st.sampled_from([b"", b"hello", b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"]))


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([b"200 OK", b"404 Not Found", b"204 No Content", b"304 x"]))
    status = draw(st.sampled_from([status, b"101 Switching", b"100 Continue", b"200", b"99 x"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"]))
    head = version + b" " + status + b"\r\n" + draw(field_lines()) + b"\r\n"
    return head + draw(st.sampled_from([b"", b"hello world", b"5\r\nhello\r\n0\r\n\r\n"]))


def outcome(parser: RequestParser | ResponseParser, wire: bytes) -> list[object]:
    """Every event with all its attributes, then the refusal if there was one."""
    seen: list[object] = []
    try:
        events: list[Event] = parser.feed(wire)
        events += parser.feed_eof()
    except Http1Error as exc:
        events = []
        seen.append(("refused", exc.reason))
    for event in events:
        attributes = {f.name: getattr(event, f.name) for f in dataclass_fields(event)}  # type: ignore[arg-type]
        seen.append((type(event).__name__, attributes))
    return seen


def both_lanes(make: type[RequestParser] | None, wire: bytes, methods: list[bytes]) -> None:
    def parser() -> RequestParser | ResponseParser:
        if make is RequestParser:
            return RequestParser(LIMITS)
        response = ResponseParser(LIMITS)
        for method in methods:
            response.expect(method)
        return response

    http1.FAST_LANE = True
    fast = outcome(parser(), wire)
    http1.FAST_LANE = False
    try:
        full = outcome(parser(), wire)
    finally:
        http1.FAST_LANE = head_scan.AVAILABLE
    assert fast == full, wire


@SETTINGS
@given(requests())
def test_requests_read_the_same_on_both_lanes(wire: bytes) -> None:
    both_lanes(RequestParser, wire, [])


@SETTINGS
@given(responses(), st.sampled_from([b"GET", b"HEAD", b"POST", b"CONNECT"]))
def test_responses_read_the_same_on_both_lanes(wire: bytes, method: bytes) -> None:
    both_lanes(None, wire, [method, b"GET"])


def test_the_common_heads_take_the_fast_lane() -> None:
    # A missing lane is a failed build, said loudly: only the switch may turn it off.
    if os.environ.get("MYCELIUM_PURE_PYTHON", "") not in ("", "0"):
        assert not head_scan.AVAILABLE
        return
    if not head_scan.AVAILABLE:
        pytest.fail(
            f"the compiled fast lane is not here: {head_scan.WHY_NOT}. Install a C compiler "
            f"and Python's headers and run `make bootstrap`, or set MYCELIUM_PURE_PYTHON=1"
        )
    request = b"GET /a?b=1 HTTP/1.1\r\nHost: reviews\r\nAccept: */*\r\n\r\n"
    scanned = head_scan.scan_request_head(request, 100, 8192)
    assert scanned == (
        b"GET",
        b"/a?b=1",
        [(b"host", b"reviews"), (b"accept", b"*/*")],
        b"reviews",
        -1,
        0,
    )
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"
    assert head_scan.scan_response_head(response, 100) == (
        200,
        b"OK",
        [(b"content-length", b"2"), (b"connection", b"keep-alive")],
        2,
        False,
        1,
    )


def test_the_lane_can_be_turned_off_for_debugging() -> None:
    probe = "from mycelium.proxy.protocols import head_scan as h; print(h.AVAILABLE, h.WHY_NOT)"
    env = {**os.environ, "MYCELIUM_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False MYCELIUM_PURE_PYTHON is set"
