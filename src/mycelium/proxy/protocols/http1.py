"""HTTP/1.1 messages for the proxy, without I/O: bytes in, events out, bytes to send.

`RequestParser` (a client's connection) and `ResponseParser` (an upstream's) take bytes
through `feed()` and return events: a `RequestReceived` or `ResponseReceived` head, the
body in `DataReceived` pieces, then `MessageEnded` with the trailers. The `encode_*`
functions write heads and chunks. There is no socket, clock or asyncio here.

The work is split with llhttp (through httptools). This module cuts the byte stream at
each head's blank line and feeds llhttp the head alone; llhttp checks it strictly and
hands over its fields; this module then decides the body's framing and reads the body
itself. llhttp never sees a body, so that:
- a head's size is bounded before anything buffers it, and we know exactly where the
  next message, or the upgraded protocol's first byte, begins;
- HEAD and CONNECT responses, which llhttp cannot frame without being told the method,
  are framed like any other;
- the framing is decided in one place, which refuses every ambiguity RFC 9112 section
  6.3 lets a recipient refuse (the material of request smuggling), and chunk-size lines
  are bounded.

Invariants, held by the tests:
- any input yields events or raises an `Http1Error`, and nothing else escapes;
- however the bytes are split across `feed()` calls, the events are the same, up to
  where the body is cut into `DataReceived` pieces (each call yields at most one piece
  per body);
- an error ends the parser: every later `feed()` raises it again, and the events of the
  call that raised are dropped (the connection is over; the error says what to answer).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Final, Literal

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, HttpResponseParser

from mycelium.errors import ConfigError
from mycelium.proxy.protocols import head_scan
from mycelium.proxy.protocols.errors import (
    DownstreamProtocolError,
    Http1Error,
    Http1Reason,
    LocalProtocolError,
    UpstreamProtocolError,
)

__all__ = [
    "CHUNKED",
    "DEFAULT_LIMITS",
    "MAX_CHUNK_LINE_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_COUNT",
    "MAX_URI_BYTES",
    "NO_BODY",
    "UNTIL_CLOSE",
    "DataReceived",
    "Event",
    "Framing",
    "FramingKind",
    "Http1Error",
    "Http1Limits",
    "MessageEnded",
    "RequestParser",
    "RequestReceived",
    "ResponseParser",
    "ResponseReceived",
    "encode_chunk",
    "encode_continue",
    "encode_last_chunk",
    "encode_request_head",
    "encode_response_head",
]

# --- limits ---------------------------------------------------------------------------------

# A head, counted raw: from the request or status line to the blank line, CRLFs included.
# Envoy's max_request_headers_kb defaults to 60 KiB counted over names and values only;
# counting the raw section we add a margin for the request line, ": " and CRLFs, so that
# whatever an Envoy-based gateway in front of the mesh forwarded also passes here.
MAX_HEADER_BYTES: Final = 64 * 1024
# Envoy's max_headers_count default. Real requests carry 5 to 30 fields; each costs a
# parser callback and a tuple, so a peer sending thousands of tiny ones is refused.
MAX_HEADER_COUNT: Final = 100
# The request-target. RFC 9112 section 3 asks for request-lines of at least 8000 octets;
# nginx and Apache refuse longer ones with 414, so applications behind the mesh could not
# have relied on longer URIs anyway.
MAX_URI_BYTES: Final = 8 * 1024
# A chunk-size line: the size (16 hex digits hold any 64-bit size) and chunk extensions,
# which no mainstream client sends. Unbounded extensions let a peer make us read bytes
# that carry no data (Node's CVE-2024-22019); 4 KiB leaves room for any real extension.
MAX_CHUNK_LINE_BYTES: Final = 4 * 1024
# The largest chunk we accept: what a signed 64-bit size holds, as other parsers do.
_MAX_CHUNK_SIZE: Final = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Http1Limits:
    """What a peer may make one HTTP/1.1 connection parse or buffer."""

    max_header_bytes: int = MAX_HEADER_BYTES
    """A head (or a trailer section), raw; beyond it: 431 `header_too_large`."""
    max_header_count: int = MAX_HEADER_COUNT
    """Fields in a head (or a trailer section); beyond it: 431 `too_many_headers`."""
    max_uri_bytes: int = MAX_URI_BYTES
    """The request-target; beyond it: 414 `uri_too_long`."""
    max_chunk_line_bytes: int = MAX_CHUNK_LINE_BYTES
    """A chunk-size line with its extensions; beyond it: 400 `bad_chunk`."""
    max_request_body_bytes: int | None = None
    """A request body (None: unlimited); beyond it: 413 `body_too_large`."""
    max_response_body_bytes: int | None = None
    """A response body (None: unlimited); beyond it: 502, cause `body_too_large`."""

    def __post_init__(self) -> None:
        for name in (
            "max_header_bytes",
            "max_header_count",
            "max_uri_bytes",
            "max_chunk_line_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"Http1Limits.{name} must be at least 1")
        for name in ("max_request_body_bytes", "max_response_body_bytes"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"Http1Limits.{name} must be None (no limit) or >= 0")


DEFAULT_LIMITS: Final = Http1Limits()

# --- events ---------------------------------------------------------------------------------

type FramingKind = Literal["none", "length", "chunked", "close"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Framing:
    """How a message's body is delimited (RFC 9112 section 6.3).

    - "none": no body at all (a GET without Content-Length, a HEAD or 304 response...);
    - "length": exactly `length` bytes (Content-Length, which may be 0);
    - "chunked": Transfer-Encoding: chunked, ended by the last chunk and its trailers;
    - "close": a response body that ends when the server closes the connection.
    """

    kind: FramingKind
    length: int | None = None

    def __post_init__(self) -> None:
        if (self.kind == "length") != (self.length is not None):
            raise LocalProtocolError("bad_request", f"{self!r}: only 'length' has a length")
        if self.length is not None and self.length < 0:
            raise LocalProtocolError("bad_request", f"{self!r}: a length cannot be negative")


NO_BODY: Final = Framing(kind="none")
CHUNKED: Final = Framing(kind="chunked")
UNTIL_CLOSE: Final = Framing(kind="close")
_EMPTY: Final = Framing(kind="length", length=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A request head. Its body follows as `DataReceived` events, then `MessageEnded`."""

    method: bytes
    target: bytes
    http_version: bytes
    """b"1.1" or b"1.0"; nothing else is accepted."""
    headers: list[tuple[bytes, bytes]]
    """Names lowercased, values without surrounding whitespace; order and repeats kept."""
    keep_alive: bool
    """Whether the client wants the connection kept after this exchange."""
    framing: Framing
    expect_continue: bool = False
    """The client waits for `encode_continue()` (or a final response) before its body."""
    upgrade: bytes | None = None
    """The Upgrade header (b"websocket") when the request asks to switch protocols."""
    host: bytes = field(default=b"", compare=False)
    """The Host field's value (b"" in an HTTP/1.0 request without one)."""
    raw_head: bytes = field(default=b"", compare=False)
    """The head exactly as received, from the request line to the blank line."""
    forwardable: bool = field(default=False, compare=False)
    """`raw_head` may go to the next hop unchanged: HTTP/1.1, and no hop-by-hop field
    (RFC 9110 section 7.6.1) but `Connection: keep-alive`, no Expect, no Upgrade."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response head. 1xx heads other than 101 are interim: no body, no `MessageEnded`;
    the final response to the same request follows."""

    status: int
    reason: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    """Whether the connection can carry another exchange once this response has ended."""
    framing: Framing
    upgrade: bool = False
    """The connection stops carrying HTTP after this head: a 101, or a 2xx to CONNECT."""
    raw_head: bytes = field(default=b"", compare=False)
    """The head exactly as received, from the status line to the blank line."""
    forwardable: bool = field(default=False, compare=False)
    """`raw_head` may go to the next hop unchanged when that hop keeps its connection
    alive: HTTP/1.1, no upgrade, and no hop-by-hop field (RFC 9110 section 7.6.1) but
    `Connection: keep-alive` and `Transfer-Encoding: chunked` (a body we chunk again)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived:
    """A piece of the current message's body (chunk framing already removed)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEnded:
    """The current message is complete; `trailers` come from a chunked body's end."""

    trailers: list[tuple[bytes, bytes]]


type Event = RequestReceived | ResponseReceived | DataReceived | MessageEnded

# Events carry no checks of their own: only the parsers make them, from bytes they have
# checked. They fill the slots directly: a frozen dataclass's __init__ pays an
# object.__setattr__ per field, 1.5 us for a RequestReceived on the reference machine
# (a third of the parse budget), against 0.6 us this way. The result is the same frozen
# value, equal to one built through the constructor.
_new = object.__new__


def _slot_setters(cls: type) -> tuple[Callable[[object, object], None], ...]:
    return tuple(getattr(cls, field.name).__set__ for field in fields(cls))


(_set_data,) = _slot_setters(DataReceived)
(_set_trailers,) = _slot_setters(MessageEnded)
(_set_kind, _set_length) = _slot_setters(Framing)


(
    _set_method,
    _set_target,
    _set_request_version,
    _set_request_headers,
    _set_request_keep_alive,
    _set_request_framing,
    _set_expect_continue,
    _set_request_upgrade,
    _set_request_host,
    _set_request_raw_head,
    _set_request_forwardable,
) = _slot_setters(RequestReceived)
(
    _set_status,
    _set_reason,
    _set_response_version,
    _set_response_headers,
    _set_response_keep_alive,
    _set_response_framing,
    _set_response_upgrade,
    _set_response_raw_head,
    _set_response_forwardable,
) = _slot_setters(ResponseReceived)


# The fast lane builds its heads in C (`_head_scan.new_event`), filling the same slots.
_REQUEST: Final = 0
_RESPONSE: Final = 1
_DATA: Final = 2
_END: Final = 3


def _request_received(  # noqa: PLR0917 - positional on purpose: one per request, hot
    method: bytes,
    target: bytes,
    http_version: bytes,
    headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    framing: Framing,
    expect_continue: bool,
    upgrade: bytes | None,
    host: bytes = b"",
    raw_head: bytes = b"",
    forwardable: bool = False,
) -> RequestReceived:
    event: RequestReceived = _new(RequestReceived)
    _set_method(event, method)
    _set_target(event, target)
    _set_request_version(event, http_version)
    _set_request_headers(event, headers)
    _set_request_keep_alive(event, keep_alive)
    _set_request_framing(event, framing)
    _set_expect_continue(event, expect_continue)
    _set_request_upgrade(event, upgrade)
    _set_request_host(event, host)
    _set_request_raw_head(event, raw_head)
    _set_request_forwardable(event, forwardable)
    return event


def _response_received(  # noqa: PLR0917 - positional on purpose: one per response, hot
    status: int,
    reason: bytes,
    http_version: bytes,
    headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    framing: Framing,
    upgrade: bool,
    raw_head: bytes = b"",
    forwardable: bool = False,
) -> ResponseReceived:
    event: ResponseReceived = _new(ResponseReceived)
    _set_status(event, status)
    _set_reason(event, reason)
    _set_response_version(event, http_version)
    _set_response_headers(event, headers)
    _set_response_keep_alive(event, keep_alive)
    _set_response_framing(event, framing)
    _set_response_upgrade(event, upgrade)
    _set_response_raw_head(event, raw_head)
    _set_response_forwardable(event, forwardable)
    return event


def _data_received(data: bytes) -> DataReceived:
    event: DataReceived = _new(DataReceived)
    _set_data(event, data)
    return event


def _message_ended(trailers: list[tuple[bytes, bytes]]) -> MessageEnded:
    event: MessageEnded = _new(MessageEnded)
    _set_trailers(event, trailers)
    return event


def _length_framing(length: int) -> Framing:
    if length == 0:
        return _EMPTY
    framing = _LENGTHS.get(length)
    if framing is None:
        framing = _new(Framing)
        _set_kind(framing, "length")
        _set_length(framing, length)
        if length < _MAX_SHARED_LENGTH:
            _LENGTHS[length] = framing
    return framing


# Framings are frozen values: those of the small lengths that make most messages are
# made once and shared. The bound keeps the table to a few thousand entries at most.
_MAX_SHARED_LENGTH: Final = 4096
_LENGTHS: dict[int, Framing] = {}


# --- the compiled fast lane -------------------------------------------------------------------

# Whether heads try `_head_scan` first (see proxy/protocols/head_scan.py); tests turn it
# off to compare both lanes.
FAST_LANE: bool = head_scan.AVAILABLE
scan_request_head = head_scan.scan_request_head
scan_response_head = head_scan.scan_response_head
new_event = head_scan.new_event
whole_request = head_scan.whole_request
whole_response = head_scan.whole_response
_CLOSE: Final = 2  # the lanes' code for `Connection: close`


# --- grammar --------------------------------------------------------------------------------

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"  # RFC 9110 section 5.6.2
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
# RFC 9112 section 7.1.1: chunk-size [ chunk-ext ], where chunk-ext is
# *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ).
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]+)(?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+"
    rb"(?:[ \t]*=[ \t]*(?:[" + _TCHAR + rb"]+|" + _QUOTED_STRING + rb"))?)*"
)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_OBS_FOLD = re.compile(rb"\n[ \t]")
_REQUEST_TARGET = re.compile(rb"[\x21-\x7e]+")  # visible ASCII, as llhttp accepts it
_REASON_PHRASE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # RFC 9112 section 4
_HTTP2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 section 3.4

# Fields the framing and connection decisions read; the field callback sets them aside.
_FRAMING_FIELDS: Final = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"}
)
# The other hop-by-hop fields (RFC 9110 section 7.6.1): a head holding one of them cannot
# be forwarded as received (`forwardable`).
_OTHER_HOP_BY_HOP: Final = frozenset(
    {
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
# Every field the collector looks at, in one lookup: True for the framing ones.
_WATCHED_FIELDS: Final = dict.fromkeys(_FRAMING_FIELDS, True) | dict.fromkeys(
    _OTHER_HOP_BY_HOP, False
)
# The framing fields a head forwarded as received may hold (besides Host).
_PLAIN_REQUEST_FIELDS: Final = frozenset({b"content-length", b"connection"})
_PLAIN_RESPONSE_FIELDS: Final = frozenset({b"content-length", b"connection", b"transfer-encoding"})


def _plain(facts: dict[bytes, list[bytes]], allowed: frozenset[bytes]) -> bool:
    """Whether framing fields `facts` allow forwarding a head as received: only `allowed`
    ones, and Connection, if there, saying just keep-alive (HTTP/1.1's default)."""
    if not facts.keys() <= allowed:
        return False
    connection = facts.get(b"connection")
    return connection is None or (len(connection) == 1 and connection[0].lower() == b"keep-alive")


# How llhttp words the errors it finds in a head, and what we call them.
_LLHTTP_ERRORS: Final[tuple[tuple[str, Http1Reason, str], ...]] = (
    ("Invalid header token", "bad_header_name", "a field name is not a token"),
    ("Invalid header field char", "bad_header_name", "a field name is not a token"),
    ("Invalid header value char", "bad_header_value", "a field value holds a control byte"),
    ("Missing expected LF after header value", "bad_header_value", "a field value holds a CR"),
    (
        "can't be present with",
        "request_smuggling",
        "the message has both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)",
    ),
    (
        "Duplicate Content-Length",
        "request_smuggling",
        "the message has several Content-Length fields; even equal ones are refused, since "
        "no sane client sends them and every hop must agree on one length",
    ),
    (
        "Transfer-Encoding",
        "request_smuggling",
        "Transfer-Encoding is not exactly 'chunked', applied once and last "
        "(RFC 9112 section 6.3, rule 4)",
    ),
    ("Content-Length", "bad_content_length", "Content-Length is not a decimal number"),
    ("Invalid HTTP version", "unsupported_version", "only HTTP/1.0 and HTTP/1.1 are spoken"),
    ("Invalid response status", "bad_status", "the status code is not three digits"),
)


def _diagnose(exc: Exception, section: bytes) -> tuple[Http1Reason, str]:
    """Name what llhttp refused in `section` (the head bytes fed so far)."""
    said = f"(llhttp: {exc})"
    # Line endings are judged on the bytes themselves: llhttp's message depends on where
    # the stray LF falls (after the version, after a value...).
    if _BARE_LF.search(section):
        return "bare_lf", (
            f"a line ends with LF alone where HTTP/1.1 requires CRLF (RFC 9112 section 2.2); "
            f"a hop that accepted it could disagree with the next about the framing {said}"
        )
    if _OBS_FOLD.search(section):
        return "obsolete_line_folding", (
            f"a field line starts with whitespace, folding it onto the previous one; "
            f"RFC 9112 section 5.2 deprecates this and we refuse it {said}"
        )
    message = str(exc)
    for needle, reason, explanation in _LLHTTP_ERRORS:
        if needle in message:
            return reason, f"{explanation} {said}"
    if "Invalid method" in message:
        word = section.split(b" ", 1)[0].lstrip(b"\r\n")
        if word and _TOKEN.fullmatch(word):
            return "unsupported_method", (
                f"the method {word[:20]!r} is not one llhttp knows, so we cannot proxy it {said}"
            )
    return "bad_request", f"the head is not valid HTTP/1.1 {said}"


# --- parsing ----------------------------------------------------------------------------------


class _FieldCollector:
    """llhttp's callbacks: the field lines of the head (or trailers) being parsed."""

    __slots__ = ("at_boundary", "facts", "fields", "hop_by_hop")

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.facts: dict[bytes, list[bytes]] = {}  # the framing fields' values, by name
        self.hop_by_hop = False  # a hop-by-hop field outside the framing ones was seen
        # True while llhttp sits between messages; False once it saw a head that it
        # thinks has a body, which we read ourselves: that llhttp must then be replaced.
        self.at_boundary = True

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        # llhttp drops the whitespace before a value but keeps what trails it, which
        # RFC 9112 section 5 excludes from the value too.
        value = value.rstrip(b" \t")
        self.fields.append((name, value))
        watched = _WATCHED_FIELDS.get(name)
        if watched is None:
            return
        if watched:
            values = self.facts.get(name)
            if values is None:
                self.facts[name] = [value]
            else:
                values.append(value)
        else:
            self.hop_by_hop = True

    def on_message_complete(self) -> None:
        self.at_boundary = True


# Parser states: where the next byte belongs.
_HEAD: Final = 0  # a request or status line and header fields
_LENGTH: Final = 1  # a Content-Length body
_CHUNK_LINE: Final = 2  # a chunk-size line
_CHUNK_DATA: Final = 3  # a chunk's data
_CHUNK_END: Final = 4  # the CRLF after a chunk's data
_TRAILERS: Final = 5  # the trailer section after the last chunk
_UNTIL_CLOSE: Final = 6  # a response body that ends when the connection does

# llhttp has no entry point for a lone field section: trailers go to a throwaway
# response parser behind this status line, so they pass exactly the checks heads pass.
_TRAILER_PRELUDE: Final = b"HTTP/1.1 204 Trailers\r\n"


class _MessageParser:
    """What requests and responses share: cutting heads, reading bodies, limits."""

    __slots__ = (
        "_body_bytes",
        "_body_limit",
        "_buf",
        "_collector",
        "_error",
        "_expected",
        "_left",
        "_line_seen",
        "_llhttp",
        "_probe",
        "_rest",
        "_section",
        "_section_llhttp",
        "_state",
        "_stop_after_message",
        "_stopped",
        "_trailer_collector",
        "limits",
    )

    def __init__(
        self,
        limits: Http1Limits,
        body_limit: int | None,
        probe: bytes | None,
        expected: deque[bytes] | None,
    ) -> None:
        self.limits = limits
        # A client connection's first bytes, held while they could be an HTTP/2 preface.
        self._probe = probe
        # A response parser's requests awaiting a response: their methods, in order.
        self._expected = expected
        self._body_limit = body_limit
        self._collector = _FieldCollector()
        self._llhttp = self._new_llhttp()
        self._state = _HEAD
        self._buf = b""  # a partial chunk-size line or chunk end, held between feeds
        self._section = bytearray()  # a partial head or trailers, already fed to llhttp
        self._section_llhttp: HttpResponseParser | None = None  # for the trailers
        self._trailer_collector = _FieldCollector()
        self._line_seen = False  # the partial head holds its first line completely
        self._left = 0  # body bytes still due: the Content-Length's rest or the chunk's
        self._body_bytes = 0  # body bytes of the current message, for the body limit
        self._stop_after_message = False
        self._stopped = False
        self._rest = b""
        self._error: Http1Error | None = None

    # --- public -----------------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """No more events will come: after an upgrade, a CONNECT, a message after which
        the connection must close, or the end of the stream. See `take_remaining()`."""
        return self._stopped

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`, the next bytes of the connection; return the events completed."""
        if (
            FAST_LANE
            and self._state == _HEAD
            and not self._buf
            and not self._section
            and self._probe is None
            and not self._stopped
            and self._error is None
        ):
            whole = self._whole_message(data)
            if whole is not None:
                return whole
        if self._error is not None:
            raise self._error
        if self._stopped:
            self._rest += data
            return []
        if self._probe is not None:
            data = self._settle_probe(data)
            if not data:
                return []
        events: list[Event] = []
        try:
            self._consume(self._buf + data if self._buf else data, events)
        except Http1Error as exc:
            self._error = exc
            raise
        return events

    def _whole_message(self, data: bytes) -> list[Event] | None:
        """The most common read: exactly one message, its head taken by the fast lane and
        its body (by Content-Length) complete, read in one call to the compiled lane
        (`whole_request`/`whole_response`). None, having changed nothing, otherwise."""
        raise NotImplementedError

    def _took_whole(self, head: RequestReceived | ResponseReceived) -> None:
        if not head.keep_alive:
            self._stop_after_message = True
            self._stopped = True

    def feed_eof(self) -> list[Event]:
        """The peer closed its side: end a body delimited by the close, or refuse the
        message it cut short (`incomplete_message`)."""
        if self._error is not None:
            raise self._error
        events: list[Event] = []
        if not self._stopped:
            if self._state == _UNTIL_CLOSE:
                self._end_message(events, [], [])
            elif self._state != _HEAD or self._section or self._buf or self._pending_start():
                self._error = self._refuse(
                    "incomplete_message", "the connection closed in the middle of a message"
                )
                raise self._error
        self._stopped = True
        return events

    def take_remaining(self) -> bytes:
        """The bytes received past the point where the parser stopped (the upgraded
        protocol's or the tunnel's first bytes); b"" before it stopped."""
        rest, self._rest = self._rest, b""
        return rest

    # --- what requests and responses do differently ---------------------------------------

    def _new_llhttp(self) -> HttpRequestParser | HttpResponseParser:
        raise NotImplementedError

    def _refuse(self, reason: Http1Reason, detail: str) -> Http1Error:
        raise NotImplementedError

    def _start_message(self, head: bytes, events: list[Event]) -> None:
        raise NotImplementedError

    def _scanned_head(self, head: bytes) -> RequestReceived | ResponseReceived | None:
        """The event of a whole head read by the compiled fast lane, or None when the
        lane declines it. Changes nothing: `_take_scanned` commits to it."""
        raise NotImplementedError

    def _take_scanned(self, event: RequestReceived | ResponseReceived) -> None:
        """Commit to a head the fast lane read (the lane took no upgrade or CONNECT)."""
        self._stop_after_message = not event.keep_alive

    def _start_scanned(self, head: bytes, events: list[Event]) -> bool:
        event = self._scanned_head(head)
        if event is None:
            return False
        self._take_scanned(event)
        events.append(event)
        framing = event.framing
        if framing is NO_BODY or framing is _EMPTY:
            self._end_message(events, [], [])
        else:
            self._begin_body(framing)
        return True

    def _settle_probe(self, data: bytes) -> bytes:
        """Hold a client's first bytes while they may still be an HTTP/2 preface (RFC 9113
        section 3.4); return them once they cannot (b"" while undecided)."""
        data = self._probe + data if self._probe else data
        seen = min(len(data), len(_HTTP2_PREFACE))
        if data[:seen] != _HTTP2_PREFACE[:seen]:
            self._probe = None
            return data
        if seen < len(_HTTP2_PREFACE):
            self._probe = data
            return b""
        self._rest = data
        self._error = DownstreamProtocolError(
            "http2_preface",
            "the client speaks HTTP/2 with prior knowledge on an HTTP/1.1 connection; "
            "route it to HTTP/2 (its bytes: take_remaining())",
        )
        raise self._error

    def _partial_head(self, section: bytearray, piece: bytes) -> None:
        """`piece` joined a head whose blank line has not come yet."""

    def _pending_start(self) -> bool:
        """Bytes are held that may begin a message (for `feed_eof`)."""
        return False

    def _oversized(self, section: bytes) -> Http1Error:
        return self._refuse(
            "header_too_large",
            f"the header section exceeds {self.limits.max_header_bytes} bytes; raise "
            f"Http1Limits.max_header_bytes if this peer is legitimate",
        )

    # --- the byte stream ------------------------------------------------------------------

    def _consume(self, buf: bytes, events: list[Event]) -> None:
        pos = 0
        end = len(buf)
        pieces: list[bytes] = []  # this call's body data, one DataReceived per message
        while pos < end:
            state = self._state
            if state == _HEAD:
                pos = self._head(buf, pos, events)
            elif state == _LENGTH:
                take = min(self._left, end - pos)
                pieces.append(buf[pos : pos + take] if pos or take != end else buf)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._end_message(events, pieces, [])
            elif state == _CHUNK_DATA:
                take = min(self._left, end - pos)
                pieces.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _CHUNK_END
            elif state == _CHUNK_LINE:
                stop = self._chunk_line(buf, pos)
                if stop < 0:
                    break
                pos = stop
            elif state == _CHUNK_END:
                if end - pos < 2:
                    if buf[pos] != 13:  # anything but the CR of a CRLF yet to complete
                        raise self._chunk_end_error(buf[pos : pos + 2])
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise self._chunk_end_error(buf[pos : pos + 2])
                pos += 2
                self._state = _CHUNK_LINE
            elif state == _TRAILERS:
                pos = self._trailers(buf, pos, events, pieces)
            else:  # _UNTIL_CLOSE
                self._count_body(end - pos)
                pieces.append(buf[pos:] if pos else buf)
                pos = end
            if self._stopped:
                self._rest = buf[pos:]
                pos = end
        self._buf = buf[pos:] if pos < end else b""
        if pieces:
            events.append(_data_received(pieces[0] if len(pieces) == 1 else b"".join(pieces)))

    def _head(self, buf: bytes, pos: int, events: list[Event]) -> int:
        section = self._section
        if not section:
            expected = self._expected
            if expected is not None and not expected:
                raise self._refuse("unsolicited_response", "bytes while no request was outstanding")
            # The common case, a whole head in one read, takes this short way.
            stop = buf.find(b"\r\n\r\n", pos) + 4
            if 4 <= stop <= pos + self.limits.max_header_bytes:
                head = buf[pos:stop] if pos or stop != len(buf) else buf
                if FAST_LANE and self._start_scanned(head, events):
                    return stop  # llhttp never saw it, and is still between messages
                self._fresh_llhttp()
                try:
                    self._llhttp.feed_data(head)
                except (HttpParserError, HttpParserUpgrade) as exc:
                    self._llhttp_stopped(exc, head, complete=True)
                self._start_message(head, events)
                return stop
            self._fresh_llhttp()
        stop = self._read_section(buf, pos, self._llhttp)
        if stop < 0:
            self._partial_head(section, buf[pos:])
            return len(buf)
        head = bytes(section) + buf[pos:stop]
        section.clear()
        self._line_seen = False
        self._start_message(head, events)
        return stop

    def _fresh_llhttp(self) -> None:
        """Ready llhttp for a new head: the same one if it sits between messages."""
        collector = self._collector
        if not collector.at_boundary:
            self._llhttp = self._new_llhttp()
        collector.at_boundary = False

    def _read_section(
        self, buf: bytes, pos: int, llhttp: HttpRequestParser | HttpResponseParser
    ) -> int:
        """Feed llhttp the next bytes of a head or trailer section. Return where the
        section ends in `buf` (just past its blank line), or -1 when it goes on beyond
        `buf`, whose bytes are then kept in `self._section`."""
        section = self._section
        stop = -1
        if section:
            # The blank line may straddle the bytes kept and the new ones.
            kept = section[-3:]
            found = (bytes(kept) + buf[pos : pos + 3]).find(b"\r\n\r\n")
            if found >= 0:
                stop = pos + found + 4 - len(kept)
        if stop < 0:
            stop = buf.find(b"\r\n\r\n", pos)
            if stop >= 0:
                stop += 4
        upto = stop if stop >= 0 else len(buf)
        if len(section) + upto - pos > self.limits.max_header_bytes:
            raise self._oversized(bytes(section) + buf[pos:upto])
        piece = buf[pos:upto]
        try:
            llhttp.feed_data(piece)
        except (HttpParserError, HttpParserUpgrade) as exc:
            self._llhttp_stopped(exc, bytes(section) + piece, complete=stop >= 0)
        if stop < 0:
            section += piece
        return stop

    def _llhttp_stopped(
        self, exc: HttpParserError | HttpParserUpgrade, fed: bytes, *, complete: bool
    ) -> None:
        """llhttp raised on `fed`, the section's bytes so far: refuse them, unless it only
        paused at the end of an upgrade or CONNECT head, where we stop too."""
        if complete and (
            isinstance(exc, HttpParserUpgrade)
            or str(exc).startswith("Pause on CONNECT/Upgrade")  # a 101 without Upgrade
        ):
            # That llhttp is not reused: it would take what follows for the new protocol.
            self._collector.at_boundary = False
            return
        reason, detail = _diagnose(exc, fed)
        raise self._refuse(reason, detail) from None

    def _chunk_line(self, buf: bytes, pos: int) -> int:
        """Read a chunk-size line; return where the chunk's data begins, or -1 to wait."""
        limit = self.limits.max_chunk_line_bytes
        cr = buf.find(b"\r\n", pos)
        if cr < 0:
            if len(buf) - pos > limit + 1:  # + 1: the CR of a CRLF still to complete
                raise self._long_chunk_line(limit)
            if buf.find(b"\n", pos) >= 0:
                raise self._refuse("bare_lf", "a chunk-size line ends with LF alone, not CRLF")
            return -1
        if cr - pos > limit:
            raise self._long_chunk_line(limit)
        match = _CHUNK_SIZE_LINE.fullmatch(buf, pos, cr)
        if match is None:
            line = buf[pos:cr]
            if b"\n" in line:
                raise self._refuse("bare_lf", "a chunk-size line ends with LF alone, not CRLF")
            raise self._refuse(
                "bad_chunk", f"the chunk-size line {line[:40]!r} is not hex digits [; extensions]"
            )
        size = int(match[1], 16)
        if size > _MAX_CHUNK_SIZE:
            raise self._refuse("bad_chunk", f"a chunk size of {match[1][:40]!r} overflows")
        if size == 0:
            # The last chunk: the trailer section follows. Its blank line may come at once,
            # right after the CRLF that ended this line, which is why that CRLF is kept.
            self._state = _TRAILERS
            self._section += b"\r\n"
            self._trailer_collector = _FieldCollector()
            self._section_llhttp = HttpResponseParser(self._trailer_collector)
            self._section_llhttp.feed_data(_TRAILER_PRELUDE)
        else:
            self._left = size
            self._count_body(size)  # refuse an oversized chunk before reading it
            self._state = _CHUNK_DATA
        return cr + 2

    def _long_chunk_line(self, limit: int) -> Http1Error:
        return self._refuse(
            "bad_chunk",
            f"a chunk-size line exceeds {limit} bytes (Http1Limits.max_chunk_line_bytes); "
            f"chunk extensions that long carry nothing but load",
        )

    def _chunk_end_error(self, seen: bytes) -> Http1Error:
        if seen[:1] == b"\n":
            return self._refuse("bare_lf", "a chunk's data ends with LF alone, not CRLF")
        return self._refuse(
            "bad_chunk", f"a chunk's data is followed by {seen!r}, not CRLF: its size was wrong"
        )

    def _trailers(self, buf: bytes, pos: int, events: list[Event], pieces: list[bytes]) -> int:
        llhttp = self._section_llhttp
        assert llhttp is not None
        stop = self._read_section(buf, pos, llhttp)
        if stop < 0:
            return len(buf)
        self._section.clear()
        self._section_llhttp = None
        trailers = self._trailer_collector.fields
        if len(trailers) > self.limits.max_header_count:
            raise self._too_many_fields(len(trailers))
        self._end_message(events, pieces, trailers)
        return stop

    def _count_body(self, size: int) -> None:
        self._body_bytes += size
        limit = self._body_limit
        if limit is not None and self._body_bytes > limit:
            raise self._refuse(
                "body_too_large",
                f"the body exceeds {limit} bytes; raise the body limit of Http1Limits if "
                f"this peer is legitimate",
            )

    def _too_many_fields(self, count: int) -> Http1Error:
        return self._refuse(
            "too_many_headers",
            f"{count} fields, more than {self.limits.max_header_count} "
            f"(Http1Limits.max_header_count)",
        )

    def _end_message(
        self, events: list[Event], pieces: list[bytes], trailers: list[tuple[bytes, bytes]]
    ) -> None:
        if pieces:
            events.append(_data_received(pieces[0] if len(pieces) == 1 else b"".join(pieces)))
            pieces.clear()
        events.append(_message_ended(trailers))
        self._state = _HEAD
        self._body_bytes = 0
        if self._stop_after_message:
            self._stopped = True

    def _take_fields(self) -> tuple[list[tuple[bytes, bytes]], dict[bytes, list[bytes]], bool]:
        """The fields of the head just parsed, the framing ones grouped by name, and
        whether another hop-by-hop field was among them."""
        collector = self._collector
        fields = collector.fields
        if len(fields) > self.limits.max_header_count:
            raise self._too_many_fields(len(fields))
        collector.fields = []
        facts = collector.facts
        collector.facts = {}
        hop_by_hop = collector.hop_by_hop
        collector.hop_by_hop = False
        return fields, facts, hop_by_hop

    def _first_line(self, head: bytes) -> bytes:
        start = 0
        if head[0] == 13:  # empty lines before the first line (RFC 9112 section 2.2)
            start = len(head) - len(head.lstrip(b"\r\n"))
            if start == len(head):
                raise self._refuse("bad_request", "several empty lines instead of a message")
        return head[start : head.find(b"\r\n", start)]

    def _begin_body(self, framing: Framing) -> None:
        """Enter the state that reads the body `framing` announces (not an empty one)."""
        kind = framing.kind
        if kind == "chunked":
            self._state = _CHUNK_LINE
        elif kind == "length":
            assert framing.length is not None
            self._left = framing.length
            self._state = _LENGTH
        else:
            self._state = _UNTIL_CLOSE

    def _framing(
        self,
        version: bytes,
        lengths: list[bytes] | None,
        codings: list[bytes] | None,
        otherwise: Framing,
    ) -> Framing:
        """The body framing that Content-Length and Transfer-Encoding announce."""
        if codings is not None:
            if lengths is not None:  # llhttp refuses it first; kept for the contract
                raise self._refuse(
                    "request_smuggling",
                    "the message has both Content-Length and "
                    "Transfer-Encoding (RFC 9112 section 6.3)",
                )
            if version == b"1.0":
                raise self._refuse(
                    "request_smuggling",
                    "an HTTP/1.0 message carries Transfer-Encoding, which HTTP/1.0 does not "
                    "have: its framing is faulty (RFC 9112 section 6.1)",
                )
            names = [name.strip().lower() for value in codings for name in value.split(b",")]
            names = [name for name in names if name]
            if names == [b"chunked"]:
                return CHUNKED
            # A response coded without chunked at all is framed by the close (RFC 9112
            # section 6.3, rule 4): not ambiguous, but we decode no coding, so it could not
            # be forwarded as meant. (Only responses default to UNTIL_CLOSE.)
            responding = otherwise is UNTIL_CLOSE
            ambiguous = not names or names[-1] != b"chunked" or b"chunked" in names[:-1]
            if ambiguous and not (responding and b"chunked" not in names):
                raise self._refuse(
                    "request_smuggling",
                    f"Transfer-Encoding {b', '.join(names)!r} is not 'chunked' applied once "
                    f"and last, so the body's end cannot be known (RFC 9112 section 6.3)",
                )
            raise self._refuse(
                "unsupported_transfer_coding",
                f"Transfer-Encoding {b', '.join(names)!r}: only 'chunked' is supported",
            )
        if lengths is not None:
            if len(lengths) > 1:  # llhttp refuses it first; kept for the contract
                raise self._refuse("request_smuggling", "several Content-Length fields")
            value = lengths[0]
            if not value.isdigit():
                raise self._refuse(
                    "bad_content_length", f"Content-Length {value[:40]!r} is not a number"
                )
            length = int(value)
            limit = self._body_limit
            if limit is not None and length > limit:
                raise self._refuse(
                    "body_too_large",
                    f"Content-Length {length} exceeds the body limit of {limit} bytes; raise "
                    f"the body limit of Http1Limits if this peer is legitimate",
                )
            return _length_framing(length)
        return otherwise


def _keep_alive(version: bytes, connection: list[bytes] | None) -> tuple[bool, Set[bytes]]:
    """Whether the sender keeps the connection (RFC 9112 section 9.3), and the tokens of
    its Connection fields."""
    if connection is None:
        return version == b"1.1", _NO_TOKENS
    if len(connection) == 1:  # most often a lone keep-alive or close
        known = _SINGLE_TOKENS.get(connection[0].lower())
        if known is not None:
            return (b"close" not in known) if version == b"1.1" else (b"keep-alive" in known), known
    tokens = {token.strip().lower() for value in connection for token in value.split(b",")}
    if version == b"1.1":
        return b"close" not in tokens, tokens
    return b"keep-alive" in tokens, tokens


_NO_TOKENS: Final[Set[bytes]] = frozenset()
_SINGLE_TOKENS: Final[dict[bytes, Set[bytes]]] = {
    b"keep-alive": frozenset({b"keep-alive"}),
    b"close": frozenset({b"close"}),
}


class RequestParser(_MessageParser):
    """The requests a client sends on one connection, pipelined ones in order.

    Parsing stops (`stopped`) after a request that ends the connection's HTTP/1.1 life:
    one that asks to upgrade (after its body, if any), a CONNECT, or one that does not
    keep the connection alive. `take_remaining()` then returns what the client sent
    beyond it: the new protocol's first bytes. If the upstream declines an upgrade, those
    bytes are HTTP/1.1 again: feed them to a new `RequestParser`.

    An HTTP/2 client's preface (RFC 9113 section 3.4) as the connection's first bytes
    raises `http2_preface`; `take_remaining()` then returns every byte received, for the
    caller to hand to an HTTP/2 connection.
    """

    __slots__ = ()

    def __init__(self, limits: Http1Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits, limits.max_request_body_bytes, b"", None)

    def _pending_start(self) -> bool:
        return bool(self._probe)

    def _new_llhttp(self) -> HttpRequestParser:
        return HttpRequestParser(self._collector)

    def _refuse(self, reason: Http1Reason, detail: str) -> Http1Error:
        return DownstreamProtocolError(reason, detail)

    def _partial_head(self, section: bytearray, piece: bytes) -> None:
        # Refuse an over-long request-target as soon as it is one, rather than when the
        # head is complete or the head limit (431) is reached.
        if self._line_seen:
            return
        if b"\n" in piece:
            self._line_seen = True
            return
        target_so_far = len(section) - section.find(b" ") - 1
        if target_so_far > self.limits.max_uri_bytes:
            raise self._long_uri()

    def _oversized(self, section: bytes) -> Http1Error:
        line_end = section.find(b"\r\n")
        line = section if line_end < 0 else section[:line_end]
        parts = line.split(b" ")
        if len(parts) >= 2 and len(parts[1]) > self.limits.max_uri_bytes:
            return self._long_uri()
        return super()._oversized(section)

    def _long_uri(self) -> Http1Error:
        return DownstreamProtocolError(
            "uri_too_long",
            f"the request-target exceeds {self.limits.max_uri_bytes} bytes; raise "
            f"Http1Limits.max_uri_bytes if this client is legitimate",
        )

    def _start_message(self, head: bytes, events: list[Event]) -> None:
        fields, facts, hop_by_hop = self._take_fields()
        method, target, version = self._request_line(head)
        hosts = facts.pop(b"host", ())
        if len(hosts) != 1 and (hosts or version == b"1.1"):
            raise self._refuse(
                "bad_host",
                f"{len(hosts)} Host fields; an HTTP/1.1 request has exactly one "
                f"(RFC 9112 section 3.2)",
            )
        if facts or method == b"CONNECT":
            keep_alive, framing, expect_continue, upgrade = self._request_facts(
                method, version, facts
            )
            self._stop_after_message = not keep_alive or upgrade is not None or method == b"CONNECT"
            forwardable = (
                not hop_by_hop
                and version == b"1.1"
                and method != b"CONNECT"
                and _plain(facts, _PLAIN_REQUEST_FIELDS)
            )
        else:  # the common case: no field that bears on framing or the connection
            keep_alive = version == b"1.1"
            framing = NO_BODY
            expect_continue = False
            upgrade = None
            self._stop_after_message = not keep_alive
            forwardable = keep_alive and not hop_by_hop
        events.append(
            _request_received(
                method,
                target,
                version,
                fields,
                keep_alive,
                framing,
                expect_continue,
                upgrade,
                hosts[0] if hosts else b"",
                head if head[0] != 13 else head.lstrip(b"\r\n"),
                forwardable,
            )
        )
        if framing is NO_BODY or framing is _EMPTY:
            self._end_message(events, [], [])
        else:
            self._begin_body(framing)

    def _whole_message(self, data: bytes) -> list[Event] | None:
        limits = self.limits
        events = whole_request(
            data,
            limits.max_header_bytes,
            limits.max_header_count,
            limits.max_uri_bytes,
            self._body_limit,
        )
        if events is not None:
            self._took_whole(events[0])
        return events

    def _scanned_head(self, head: bytes) -> RequestReceived | None:
        limits = self.limits
        scanned = scan_request_head(head, limits.max_header_count, limits.max_uri_bytes)
        if scanned is None:
            return None
        method, target, fields, host, length, connection = scanned
        if length < 0:
            framing = NO_BODY
        else:
            limit = self._body_limit
            if limit is not None and length > limit:
                return None  # the full path refuses it, and says why
            framing = _length_framing(length)
        # The lane took only HTTP/1.1 heads whose one hop-by-hop field, if any, is
        # Connection saying keep-alive or close: what the full path would conclude.
        keep_alive = connection != _CLOSE
        assert new_event is not None  # the lane is compiled, so is its builder
        forwardable = keep_alive
        values = (
            method,
            target,
            b"1.1",
            fields,
            keep_alive,
            framing,
            False,
            None,
            host,
            head,
            forwardable,
        )
        event: RequestReceived = new_event(_REQUEST, values)
        return event

    def _request_facts(
        self, method: bytes, version: bytes, facts: dict[bytes, list[bytes]]
    ) -> tuple[bool, Framing, bool, bytes | None]:
        """Keep-alive, framing, Expect: 100-continue and Upgrade, from their fields."""
        keep_alive, tokens = _keep_alive(version, facts.get(b"connection"))
        lengths = facts.get(b"content-length")
        codings = facts.get(b"transfer-encoding")
        if method == b"CONNECT":
            if codings is not None or (lengths is not None and lengths != [b"0"]):
                raise self._refuse("bad_request", "a CONNECT request carries a body")
            framing = NO_BODY
        else:
            framing = self._framing(version, lengths, codings, NO_BODY)
        if version == b"1.0":  # RFC 9110 sections 10.1.1 and 7.8: HTTP/1.0 has neither
            return keep_alive, framing, False, None
        expect = facts.get(b"expect")
        expect_continue = (
            expect is not None
            and framing is not NO_BODY
            and any(value.lower() == b"100-continue" for value in expect)
        )
        upgrade = facts.get(b"upgrade")
        if upgrade is None or b"upgrade" not in tokens:
            return keep_alive, framing, expect_continue, None
        return keep_alive, framing, expect_continue, b", ".join(upgrade)

    def _request_line(self, head: bytes) -> tuple[bytes, bytes, bytes]:
        # llhttp checked the method and the target's bytes, but lets several spaces
        # between the parts and protocols other than HTTP (RTSP/1.0, ICE/1.0) through.
        line = self._first_line(head)
        parts = line.split(b" ")
        if len(parts) != 3:
            if len(parts) == 2:
                raise self._refuse("unsupported_version", "an HTTP/0.9 request line")
            raise self._refuse(
                "bad_request", f"the request line {line[:60]!r} is not 'METHOD target VERSION'"
            )
        method, target, protocol = parts
        if protocol == b"HTTP/1.1":
            version = b"1.1"
        elif protocol == b"HTTP/1.0":
            version = b"1.0"
        elif protocol.startswith(b"HTTP/"):
            raise self._refuse(
                "unsupported_version", f"{protocol!r}: only HTTP/1.0 and HTTP/1.1 are spoken"
            )
        else:
            raise self._refuse("bad_request", f"{protocol!r} is not an HTTP version")
        if len(target) > self.limits.max_uri_bytes:
            raise self._long_uri()
        return method, target, version


class ResponseParser(_MessageParser):
    """The responses an upstream sends on one connection.

    Call `expect(method)` as each request is sent: a response is framed by its request
    (HEAD and 2xx to CONNECT have no body), and bytes that arrive with no request
    outstanding are refused (`unsolicited_response`). Interim 1xx responses come as a
    `ResponseReceived` without `MessageEnded`, before the final response.

    Parsing stops after a 101 or a 2xx to CONNECT (`upgrade=True`; the caller checks the
    request asked for it), and after a response that does not keep the connection;
    `take_remaining()` returns the bytes that followed. A body delimited by the close
    ends at `feed_eof()`. Errors are `UpstreamProtocolError`s (reason
    `upstream_protocol_error`, a 502 for the client) whose `cause` says what was wrong.
    """

    __slots__ = ()

    def __init__(self, limits: Http1Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits, limits.max_response_body_bytes, None, deque())

    def expect(self, method: bytes) -> None:
        """A request with `method` was sent: its response comes after the earlier ones'."""
        assert self._expected is not None
        self._expected.append(method)

    def _new_llhttp(self) -> HttpResponseParser:
        return HttpResponseParser(self._collector)

    def _refuse(self, reason: Http1Reason, detail: str) -> Http1Error:
        return UpstreamProtocolError(reason, detail)

    def _start_message(self, head: bytes, events: list[Event]) -> None:
        fields, facts, hop_by_hop = self._take_fields()
        status, reason, version = self._status_line(self._first_line(head))
        keep_alive, _ = _keep_alive(version, facts.get(b"connection"))
        if status < 200 and status != 101:
            # Interim (RFC 9110 section 15.2): no body, and the final response follows.
            events.append(
                _response_received(status, reason, version, fields, keep_alive, NO_BODY, False)
            )
            return
        assert self._expected is not None
        method = self._expected.popleft()
        upgrade = status == 101 or (method == b"CONNECT" and status < 300)
        if upgrade:
            keep_alive = False
            framing = NO_BODY
        elif method == b"HEAD" or status in (204, 304):
            framing = NO_BODY  # RFC 9112 section 6.3, rule 1
        else:
            lengths = facts.get(b"content-length")
            framing = self._framing(version, lengths, facts.get(b"transfer-encoding"), UNTIL_CLOSE)
            if framing is UNTIL_CLOSE:
                keep_alive = False
        self._stop_after_message = not keep_alive
        forwardable = (
            not upgrade
            and not hop_by_hop
            and version == b"1.1"
            and (not facts or _plain(facts, _PLAIN_RESPONSE_FIELDS))
        )
        events.append(
            _response_received(
                status,
                reason,
                version,
                fields,
                keep_alive,
                framing,
                upgrade,
                head if head[0] != 13 else head.lstrip(b"\r\n"),
                forwardable,
            )
        )
        if framing is NO_BODY or framing is _EMPTY:
            self._end_message(events, [], [])
        else:
            self._begin_body(framing)

    def _whole_message(self, data: bytes) -> list[Event] | None:
        expected = self._expected
        if not expected or expected[0] in {b"HEAD", b"CONNECT"}:
            return None  # unsolicited, or framed by the request: the full path knows how
        limits = self.limits
        events = whole_response(
            data, limits.max_header_bytes, limits.max_header_count, self._body_limit
        )
        if events is not None:
            expected.popleft()
            self._took_whole(events[0])
        return events

    def _scanned_head(self, head: bytes) -> ResponseReceived | None:
        expected = self._expected
        if not expected or expected[0] in {b"HEAD", b"CONNECT"}:
            return None  # unsolicited, or framed by the request: the full path knows how
        scanned = scan_response_head(head, self.limits.max_header_count)
        if scanned is None:
            return None
        status, reason, fields, length, chunked, connection = scanned
        if status in {204, 304}:
            return None
        if chunked:
            framing = CHUNKED
        elif length >= 0:
            limit = self._body_limit
            if limit is not None and length > limit:
                return None
            framing = _length_framing(length)
        else:
            framing = UNTIL_CLOSE
        keep_alive = connection != _CLOSE and framing is not UNTIL_CLOSE
        assert new_event is not None
        forwardable = connection != _CLOSE
        values = (status, reason, b"1.1", fields, keep_alive, framing, False, head, forwardable)
        event: ResponseReceived = new_event(_RESPONSE, values)
        return event

    def _take_scanned(self, event: RequestReceived | ResponseReceived) -> None:
        assert self._expected is not None
        self._expected.popleft()
        self._stop_after_message = not event.keep_alive

    def _status_line(self, line: bytes) -> tuple[int, bytes, bytes]:
        # llhttp checked the shape: "HTTP/" digit "." digit SP 3DIGIT [SP reason].
        protocol = line[:8]
        if protocol == b"HTTP/1.1":
            version = b"1.1"
        elif protocol == b"HTTP/1.0":
            version = b"1.0"
        else:
            raise self._refuse("unsupported_version", f"a status line {line[:40]!r}")
        code = line[9:12]
        if line[8:9] != b" " or not code.isdigit() or line[12:13] not in (b"", b" "):
            raise self._refuse("bad_status", f"a status line {line[:40]!r}")
        status = int(code)
        if not 100 <= status <= 599:
            raise self._refuse("bad_status", f"status {status}, outside 100-599 (RFC 9110)")
        return status, line[13:], version


# --- encoding -------------------------------------------------------------------------------

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


# Field names already checked to be tokens. Names repeat across messages (content-type,
# date...), and a set lookup costs a tenth of a regex match; the bound keeps a peer that
# invents names from growing it.
_TOKEN_NAMES: set[bytes] = set()
_MAX_TOKEN_NAMES: Final = 1024


def _encode_fields(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    block = b"".join([b"%s: %s\r\n" % field for field in headers])
    # Exactly one CR and one LF per line, its own end: one more anywhere would let a name
    # or a value forge a line of its own. NUL goes with them (RFC 9110 section 5.5).
    if len(block.translate(None, b"\r\n\0")) != len(block) - 2 * len(headers):
        raise _field_error(headers)
    names = [name for name, _ in headers]
    if not _TOKEN_NAMES.issuperset(names):
        for name in names:
            if _TOKEN.fullmatch(name) is None:
                raise _field_error(headers)
            if len(_TOKEN_NAMES) < _MAX_TOKEN_NAMES:
                _TOKEN_NAMES.add(name)
    return block


def _field_error(headers: Sequence[tuple[bytes, bytes]]) -> LocalProtocolError:
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None:
            return LocalProtocolError(
                "bad_header_name", f"refusing to write the field name {name[:60]!r}: not a token"
            )
        if b"\r" in value or b"\n" in value or b"\0" in value:
            return LocalProtocolError(
                "bad_header_value",
                f"refusing to write {name.decode('latin-1')}: {value[:60]!r}: a CR, LF or "
                f"NUL in a value would let it forge header lines",
            )
    return LocalProtocolError("bad_header_value", "refusing to write a malformed field")


def encode_request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    http_version: bytes = b"1.1",
) -> bytes:
    """A request line and header section, ready to send; framing fields are the caller's."""
    if _TOKEN.fullmatch(method) is None:
        raise LocalProtocolError("bad_request", f"refusing to write the method {method[:20]!r}")
    if _REQUEST_TARGET.fullmatch(target) is None:
        raise LocalProtocolError("bad_request", f"refusing to write the target {target[:60]!r}")
    if http_version not in (b"1.1", b"1.0"):
        raise LocalProtocolError("unsupported_version", f"HTTP version {http_version!r}")
    return b"%s %s HTTP/%s\r\n%s\r\n" % (method, target, http_version, _encode_fields(headers))


def encode_response_head(
    status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """A status line and header section, ready to send; framing fields are the caller's."""
    if not 100 <= status <= 599:
        raise LocalProtocolError("bad_status", f"refusing to write status {status}")
    if _REASON_PHRASE.fullmatch(reason) is None:
        raise LocalProtocolError("bad_status", f"refusing to write the reason {reason[:60]!r}")
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, _encode_fields(headers))


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; b"" for empty data, which would end the body."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def encode_last_chunk(trailers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """The end of a chunked body, with its trailers."""
    if not trailers:
        return _LAST_CHUNK
    return b"0\r\n%s\r\n" % _encode_fields(trailers)


def encode_continue() -> bytes:
    """The interim 100 (Continue) that lets a client waiting on Expect send its body."""
    return _CONTINUE


def _bind_fast_lane() -> None:
    """Tell the compiled lane which classes and framings to build its events from."""
    if head_scan.bind_event is not None and head_scan.bind_framings is not None:
        kinds = (RequestReceived, ResponseReceived, DataReceived, MessageEnded)
        for kind, cls in enumerate(kinds):
            head_scan.bind_event(kind, cls, tuple(f.name for f in fields(cls)))
        head_scan.bind_framings(NO_BODY, _EMPTY, _length_framing)


_bind_fast_lane()


# Every status the standard library names, with its phrase.
_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    """The reason phrase a status line carries (RFC 9110 section 15)."""
    return _PHRASES.get(status, b"Unknown")


# Set again by whoever writes a message, from its actual framing.
FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# Responses without a body whatever their fields say (RFC 9110 sections 15.3.5, 15.4.5).
NO_BODY_STATUSES = frozenset({204, 304})
