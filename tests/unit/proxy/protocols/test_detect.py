"""Protocol detection from a client's first bytes: each protocol, partial prefixes, garbage.

Detection must decide as early as it can, never change its mind when more bytes arrive,
and never ask for more than `MAX_DETECTION_BYTES`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.proxy.protocols.detect import (
    DETECTION_TIMEOUT,
    HTTP2_PREFACE,
    KNOWN_METHODS,
    MAX_DETECTION_BYTES,
    detect_protocol,
)

# A TLS 1.3 ClientHello as curl sends it begins with this record and handshake header.
CLIENT_HELLO_START = bytes.fromhex("16030102000100 01fc0303".replace(" ", ""))


def prefixes(data: bytes) -> list[bytes]:
    return [data[:n] for n in range(1, len(data) + 1)]


# --- HTTP/1 ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_a_known_method_followed_by_a_space_is_http1(method: bytes) -> None:
    assert detect_protocol(method + b" ") == "http1"
    assert detect_protocol(method + b" /index.html HTTP/1.1\r\nHost: a\r\n\r\n") == "http1"


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_a_known_method_without_its_space_is_undecided(method: bytes) -> None:
    for partial in prefixes(method):
        assert detect_protocol(partial) is None, partial


def test_a_request_arriving_byte_by_byte_is_decided_at_the_space() -> None:
    request = b"OPTIONS * HTTP/1.1\r\n\r\n"
    answers = [detect_protocol(p) for p in prefixes(request)]
    assert answers[: len(b"OPTIONS")] == [None] * len(b"OPTIONS")
    assert set(answers[len(b"OPTIONS") :]) == {"http1"}


@pytest.mark.parametrize(
    "request_start",
    [
        b"PROPFIND /calendars/ HTTP/1.1\r\n",
        b"MKCOL /new-folder HTTP/1.1\r\n",
        b"VERSION-CONTROL /doc HTTP/1.1\r\n",
        b"UPDATEREDIRECTREF /r HTTP/1.1\r\n",
        b"PURGE * HTTP/1.1\r\n",
        b"LINK http://example.test/a HTTP/1.1\r\n",
        b"UNLINK HTTPS://example.test/a HTTP/1.1\r\n",
    ],
)
def test_other_methods_are_http1_when_a_request_target_follows(request_start: bytes) -> None:
    assert detect_protocol(request_start) == "http1"


def test_an_unknown_method_waits_for_the_first_byte_of_the_target() -> None:
    assert detect_protocol(b"PROPFIND") is None
    assert detect_protocol(b"PROPFIND ") is None
    assert detect_protocol(b"PROPFIND /") == "http1"
    assert detect_protocol(b"LINK http:/") is None
    assert detect_protocol(b"LINK http://") == "http1"


@pytest.mark.parametrize(
    "text",
    [
        b"get / HTTP/1.1\r\n",  # methods are case-sensitive (RFC 9110 section 9.1)
        b"Get / HTTP/1.1\r\n",
        b"GET\t/ HTTP/1.1\r\n",
        b"SET key value\r\n",  # a Redis inline command: a capitalised word, no target
        b"EHLO client.example\r\n",
        b"AUTH PLAIN dGVzdA==\r\n",
        b"HELLO\r\n",
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZ /",  # longer than any HTTP method
        b"LINK ftp://example.test/ HTTP/1.1\r\n",
    ],
)
def test_text_that_only_looks_like_a_request_is_opaque(text: bytes) -> None:
    assert detect_protocol(text) == "opaque"


# --- HTTP/2 prior knowledge -----------------------------------------------------------


def test_the_h2_preface_is_http2() -> None:
    settings_frame = bytes.fromhex("000000040000000000")
    assert detect_protocol(HTTP2_PREFACE) == "http2"
    assert detect_protocol(HTTP2_PREFACE + settings_frame) == "http2"


def test_every_proper_prefix_of_the_h2_preface_is_undecided() -> None:
    # including b"PRI " and b"PRI * HTTP/", which would otherwise pass for HTTP/1
    for partial in prefixes(HTTP2_PREFACE)[:-1]:
        assert detect_protocol(partial) is None, partial


def test_a_pri_request_that_leaves_the_preface_is_judged_as_http1() -> None:
    assert detect_protocol(b"PRI * HTTP/1.1\r\n") == "http1"


# --- TLS ------------------------------------------------------------------------------


def test_a_client_hello_is_tls_after_three_bytes() -> None:
    assert detect_protocol(CLIENT_HELLO_START[:1]) is None
    assert detect_protocol(CLIENT_HELLO_START[:2]) is None
    assert detect_protocol(CLIENT_HELLO_START[:3]) == "tls"
    assert detect_protocol(CLIENT_HELLO_START) == "tls"


@pytest.mark.parametrize("minor", [1, 2, 3, 4])
def test_every_tls_record_version_is_tls(minor: int) -> None:
    assert detect_protocol(bytes([0x16, 0x03, minor])) == "tls"


@pytest.mark.parametrize(
    "record_start",
    [
        bytes([0x16, 0x03, 0x00]),  # SSL 3.0: never acceptable
        bytes([0x16, 0x03, 0x05]),
        bytes([0x16, 0x02, 0x01]),
        bytes([0x17, 0x03, 0x03]),  # application data: not how a connection starts
        bytes([0x80, 0x2E, 0x01]),  # an SSLv2-compatible hello: obsolete
    ],
)
def test_records_that_cannot_open_a_tls_connection_are_opaque(record_start: bytes) -> None:
    assert detect_protocol(record_start) == "opaque"


def test_a_wrong_second_byte_is_opaque_without_waiting_for_the_third() -> None:
    assert detect_protocol(bytes([0x16, 0x01])) == "opaque"


# --- garbage and bounds ---------------------------------------------------------------


def test_nothing_yet_is_undecided() -> None:
    assert detect_protocol(b"") is None


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x0c",  # a length-prefixed binary protocol
        b"*3\r\n$3\r\nSET\r\n",  # Redis RESP
        b"\xff\xfe",
        b" GET / HTTP/1.1\r\n",
        b"\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ],
)
def test_garbage_is_opaque(data: bytes) -> None:
    assert detect_protocol(data) == "opaque"


def test_the_timeout_is_short_but_not_zero() -> None:
    assert 0.05 <= DETECTION_TIMEOUT <= 1.0


@given(st.binary(min_size=MAX_DETECTION_BYTES, max_size=4 * MAX_DETECTION_BYTES))
def test_a_prefix_of_max_detection_bytes_is_always_decided(data: bytes) -> None:
    assert detect_protocol(data) is not None


_request_like = st.builds(
    lambda method, sep, target, tail: method + sep + target + tail,
    st.sampled_from([b"GET", b"PROPFIND", b"PRI", b"X", b"get", b"\x16\x03", b"PRI * HTTP/2.0"]),
    st.sampled_from([b" ", b"", b"\t", b"\r\n\r\nSM\r\n\r\n"]),
    st.sampled_from([b"/", b"*", b"http://", b"HTTPS:/", b"ht", b"ftp:", b"\x01"]),
    st.binary(max_size=8),
)


@given(st.one_of(st.binary(max_size=3 * MAX_DETECTION_BYTES), _request_like), st.binary())
def test_a_decision_never_changes_when_more_bytes_arrive(first: bytes, more: bytes) -> None:
    answer = detect_protocol(first)
    if answer is not None:
        assert detect_protocol(first + more) == answer


@given(st.one_of(st.binary(max_size=3 * MAX_DETECTION_BYTES), _request_like))
def test_an_undecided_prefix_is_shorter_than_the_bound(data: bytes) -> None:
    for partial in prefixes(data):
        if detect_protocol(partial) is None:
            assert len(partial) < MAX_DETECTION_BYTES
