"""Protocol detection: what does the client speak, judged from its first bytes.

`detect_protocol(prefix)` looks at the bytes a client sent so far and answers "http1",
"http2" (prior knowledge, h2c), "tls" or "opaque", or None while the bytes seen are still
a prefix of more than one answer. It is sans-IO: the listener feeds it what it has read
and owns the clock (`DETECTION_TIMEOUT`) and the buffer (`MAX_DETECTION_BYTES`).

Invariants, held by the tests:
- once a prefix is decided, every longer prefix gets the same answer;
- a prefix of `MAX_DETECTION_BYTES` bytes or more is always decided;
- "opaque" is the safe answer: such bytes are relayed untouched, whereas a wrong "http1"
  would hand a foreign protocol to an HTTP parser. So every doubtful case leans opaque.
"""

from __future__ import annotations

from typing import Literal

type DetectedProtocol = Literal["http1", "http2", "tls", "opaque"]

# How long a listener waits for the client's first bytes before treating the connection
# as opaque. A client-speaks-first protocol (HTTP, TLS, h2) writes its first bytes as
# soon as connect() returns, so on a healthy host they arrive within a few milliseconds;
# a server-speaks-first protocol (MySQL, SMTP, SSH banners) sends nothing until it hears
# from the server, so this wait is added in full to its first round trip. Linkerd's 10 s
# makes undeclared server-first protocols look hung; 300 ms is far above a loaded
# client's scheduling lag yet short enough to pass for a slow server. Ports known to be
# server-first should be declared opaque in config, which skips detection entirely.
# The cost of a client slower than this is graceful: its traffic is relayed as opaque TCP
# (it works, without L7 features), never broken.
DETECTION_TIMEOUT = 0.3  # seconds

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 section 3.4

# Methods decided as soon as "METHOD " is seen (RFC 9110 section 9, plus PATCH, RFC 5789).
KNOWN_METHODS: frozenset[bytes] = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"}
)
_KNOWN_REQUEST_STARTS = tuple(method + b" " for method in KNOWN_METHODS)

# Other methods (WebDAV's PROPFIND, MKCOL...) are accepted by a general token check. The
# longest registered method, UPDATEREDIRECTREF, has 17 characters; a longer run of
# capitals is no HTTP method we could route anyway.
MAX_METHOD_LENGTH = 20
# Registered methods use capitals and '-' only (RFC 9110 allows any tchar, but no
# client sends lowercase or punctuation methods in practice, and opaque protocols with
# text commands do). Case matters: methods are case-sensitive (RFC 9110 section 9.1).
_METHOD_START = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_METHOD_CHARS = _METHOD_START | frozenset(b"-_")
# An unregistered method also needs a request target that starts like one
# (RFC 9112 section 3.2): origin-form "/", asterisk-form "*" or absolute-form "http(s)://".
# This rules out text protocols that happen to start with a capitalised word.
_ORIGIN_OR_ASTERISK = frozenset(b"/*")
_ABSOLUTE_FORMS = (b"http://", b"https://")

# TLS record header (RFC 8446 section 5.1): content type 22 (handshake), then a legacy
# record version 3.1 to 3.4 (TLS 1.0 to 1.3; ClientHellos use 3.1 for compatibility).
TLS_HANDSHAKE = 0x16
TLS_MAJOR_VERSION = 0x03
TLS_MINOR_VERSIONS = range(0x01, 0x05)

# The longest undecided prefix is an unregistered method of MAX_METHOD_LENGTH, a space
# and "https:/" (7 bytes of target); the h2 preface needs 24. A listener never needs to
# hold more than this many bytes before it has an answer.
MAX_DETECTION_BYTES = MAX_METHOD_LENGTH + 1 + len(b"https:/") + 1


def detect_protocol(prefix: bytes) -> DetectedProtocol | None:
    """Classify a connection from the first bytes its client sent; None: need more bytes.

    Decided as early as possible: "GET " is enough for http1, three bytes for tls, the
    24-byte preface for http2. The caller treats a timeout or EOF with the answer still
    None as "opaque" (see `DETECTION_TIMEOUT`).
    """
    if not prefix:
        return None
    if prefix[0] == TLS_HANDSHAKE:
        return _detect_tls(prefix)
    if HTTP2_PREFACE.startswith(prefix[: len(HTTP2_PREFACE)]):
        if len(prefix) >= len(HTTP2_PREFACE):
            return "http2"
        return None
    # A prefix that has left the h2 preface (b"PRI * HTTP/1.1") is judged as HTTP/1:
    # PRI is a syntactically valid method, and an HTTP/1 server will reject it.
    return _detect_http1(prefix)


def _detect_tls(prefix: bytes) -> DetectedProtocol | None:
    if len(prefix) >= 2 and prefix[1] != TLS_MAJOR_VERSION:
        return "opaque"
    if len(prefix) < 3:
        return None
    return "tls" if prefix[2] in TLS_MINOR_VERSIONS else "opaque"


def _detect_http1(prefix: bytes) -> DetectedProtocol | None:
    if prefix.startswith(_KNOWN_REQUEST_STARTS):
        return "http1"
    if prefix[0] not in _METHOD_START:
        return "opaque"
    method_end = 1
    limit = min(len(prefix), MAX_METHOD_LENGTH + 1)
    while method_end < limit and prefix[method_end] in _METHOD_CHARS:
        method_end += 1
    if method_end > MAX_METHOD_LENGTH:
        return "opaque"
    if method_end == len(prefix):
        return None  # still inside the method token
    if prefix[method_end] != ord(" "):
        return "opaque"
    return _detect_request_target(prefix[method_end + 1 :])


def _detect_request_target(target: bytes) -> DetectedProtocol | None:
    """Judge the start of the request target that follows an unregistered method."""
    if not target:
        return None
    if target[0] in _ORIGIN_OR_ASTERISK:
        return "http1"
    lowered = target.lower()
    for form in _ABSOLUTE_FORMS:
        if lowered.startswith(form):
            return "http1"
    if any(form.startswith(lowered) for form in _ABSOLUTE_FORMS):
        return None
    return "opaque"
