"""HTTP/2 for the proxy, sans-IO: h2's state machine configured for each side, the
translation between pseudo-header blocks and the HTTP/1-style `(name, value)` lists the
rest of the proxy routes on, and the counters that defend a connection against floods.

h2 (`H2Connection`) does the framing, HPACK and flow-control arithmetic; this module
decides the limits. Nothing here touches a socket or a clock: times are passed in.

Invariants:
- header names are lower-case bytes everywhere (h2 validates inbound blocks);
- connection-specific fields (RFC 9113 section 8.2.2) never cross to the other side,
  and `te` only crosses as `te: trailers`;
- `SendBuffer` never hands h2 more than the peer's flow-control window allows, so
  whatever is not yet sent stays counted in `SendBuffer.buffered` — the number the
  shells use to stop acknowledging (and so stop) the other side.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from mycelium.proxy.protocols.headers import HOP_BY_HOP

type Fields = list[tuple[bytes, bytes]]

# Streams one client may have open at once: Envoy, nginx and Go's server all use 100,
# and RFC 9113 section 6.5.2 recommends no fewer than 100.
MAX_CONCURRENT_STREAMS: Final = 100
# Decoded size of one header block (names + values + 32 per field, RFC 9113 section
# 6.5.2), the same 64 KiB as the HTTP/1 head limit. h2 refuses a larger block, however
# many CONTINUATION frames carry it, and caps those frames at 64 per block.
MAX_HEADER_LIST_SIZE: Final = 64 * 1024
# Receive windows we advertise. A stream may have this many bytes in flight towards us
# before it must wait for our acknowledgement: 256 KiB keeps a 1 Gbit/s, 2 ms path busy
# while bounding what one stream can make the proxy hold. The connection window is
# larger so that several streams can progress at once.
STREAM_WINDOW_BYTES: Final = 256 * 1024
CONNECTION_WINDOW_BYTES: Final = 1024 * 1024
# The default initial window of RFC 9113 section 6.9.2, which the connection window
# starts from until a WINDOW_UPDATE raises it.
DEFAULT_WINDOW_BYTES: Final = 65_535
# Rapid reset (CVE-2023-44487): a client opens streams and cancels them at once, making
# the server start work it never finishes. Legitimate clients cancel a few streams a
# second; over this many resets in one second the connection gets GOAWAY
# ENHANCE_YOUR_CALM.
MAX_RESETS_PER_SECOND: Final = 100
# PING and SETTINGS each oblige us to answer (an ACK). Clients send a handful (gRPC
# keepalives, one SETTINGS at start); over this many in one second is a flood.
MAX_CONTROL_FRAMES_PER_SECOND: Final = 200
# Acks queued while the client is not reading our bytes (the transport paused): a
# client that floods PINGs and never reads would make us buffer acks without end.
MAX_UNREAD_ACKS: Final = 100
# Request bodies up to this size are kept for a retry (the HTTP/1 side keeps 64 KiB).
REPLAY_LIMIT_BYTES: Final = 64 * 1024

# RFC 9113 section 8.2.2: these are meaningless (and forbidden) in HTTP/2.
CONNECTION_SPECIFIC: Final = HOP_BY_HOP | {b"host", b"http2-settings"}
GRPC_CONTENT_TYPE: Final = b"application/grpc"
# gRPC status codes the proxy's own replies use (grpc/doc/statuscodes.md).
GRPC_DEADLINE_EXCEEDED: Final = 4
GRPC_UNIMPLEMENTED: Final = 12
GRPC_RESOURCE_EXHAUSTED: Final = 8
GRPC_INTERNAL: Final = 13
GRPC_UNAVAILABLE: Final = 14
# The mapping the gRPC project documents for HTTP statuses (doc/http-grpc-status-mapping.md),
# with 504 made DEADLINE_EXCEEDED: the proxy only answers 504 when a deadline passed.
_GRPC_STATUS_FOR_HTTP: Final = {
    400: GRPC_INTERNAL,
    404: GRPC_UNIMPLEMENTED,
    429: GRPC_RESOURCE_EXHAUSTED,
    504: GRPC_DEADLINE_EXCEEDED,
}
# grpc-timeout units (gRPC over HTTP/2 spec, "Requests"), as seconds = value * a / b.
_GRPC_TIMEOUT_UNITS: Final = {
    b"H": (3600, 1),
    b"M": (60, 1),
    b"S": (1, 1),
    b"m": (1, 1_000),
    b"u": (1, 1_000_000),
    b"n": (1, 1_000_000_000),
}


class Http2RequestError(ValueError):
    """A request header block the proxy cannot route (missing or malformed pseudo-headers)."""


def server_connection() -> H2Connection:
    """A server-side h2 state machine with the proxy's limits, preface not yet sent."""
    conn = H2Connection(_configuration(client_side=False))
    _apply_local_settings(conn, client=False)
    return conn


def client_connection() -> H2Connection:
    """A client-side h2 state machine towards an upstream, preface not yet sent."""
    conn = H2Connection(_configuration(client_side=True))
    _apply_local_settings(conn, client=True)
    return conn


def _configuration(*, client_side: bool) -> H2Configuration:
    # Inbound blocks are validated (RFC 9113 section 8.2); outbound ones are not again:
    # they are those validated blocks minus fields, plus fields the proxy writes
    # itself, and checking every field twice was a tenth of the proxy's time per request.
    return H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=True,
        validate_outbound_headers=False,
    )


def _apply_local_settings(conn: H2Connection, *, client: bool) -> None:
    settings = {
        SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW_BYTES,
        SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
    }
    if client:
        settings[SettingCodes.ENABLE_PUSH] = 0
    else:
        settings[SettingCodes.MAX_CONCURRENT_STREAMS] = MAX_CONCURRENT_STREAMS
    # Replaced whole (not updated): values given at construction are in force at once and
    # are what `initiate_connection` announces.
    conn.local_settings = Settings(client=client, initial_values=settings)
    # h2 applies a setting once the peer acknowledged it; the header limit must hold from
    # the first block (RFC 9113 section 6.5.3 allows being stricter meanwhile).
    conn.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE


def start(conn: H2Connection) -> None:
    """Queue the preface and SETTINGS, and open the connection window wide."""
    conn.initiate_connection()
    conn.increment_flow_control_window(CONNECTION_WINDOW_BYTES - DEFAULT_WINDOW_BYTES)


# --- header blocks -----------------------------------------------------------------------


@dataclass(slots=True)
class Http2Request:
    """A request header block split into its pseudo-headers and regular fields."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Fields  # regular fields, lower-case names, in order

    @property
    def is_grpc(self) -> bool:
        return is_grpc(self.headers)


def parse_request(block: Sequence[tuple[bytes, bytes]]) -> Http2Request:
    """Split a received request block (h2 already checked its syntax); raise
    `Http2RequestError` when something routing needs is missing."""
    method = scheme = authority = path = b""
    headers: Fields = []
    for name, value in block:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":scheme":
                scheme = value
            elif name == b":authority":
                authority = value
            elif name == b":path":
                path = value
        elif name == b"host":
            # RFC 9113 section 8.3.1: Host stands in for a missing :authority.
            authority = authority or value
        else:
            headers.append((name, value))
    if not method:
        raise Http2RequestError("the request has no :method")
    if method == b"CONNECT":
        raise Http2RequestError("CONNECT is not proxied over HTTP/2 yet")
    if not path:
        raise Http2RequestError("the request has no :path")
    if not authority:
        raise Http2RequestError("the request names no :authority (nor Host)")
    return Http2Request(method, scheme or b"http", authority, path, headers)


def request_block(
    method: bytes,
    scheme: bytes,
    authority: bytes,
    path: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> Fields:
    """The block to send upstream: pseudo-headers first (RFC 9113 section 8.3), then the
    fields that may cross a hop."""
    block: Fields = [
        (b":method", method),
        (b":scheme", scheme),
        (b":authority", authority),
        (b":path", path),
    ]
    block.extend(forwardable(headers))
    return block


def parse_response(block: Sequence[tuple[bytes, bytes]]) -> tuple[int, Fields]:
    """A response block's status and regular fields."""
    status = 0
    headers: Fields = []
    for name, value in block:
        if name == b":status":
            status = int(value)
        elif name[:1] != b":":
            headers.append((name, value))
    return status, headers


def take_authority(headers: Sequence[tuple[bytes, bytes]], default: bytes) -> tuple[bytes, Fields]:
    """The `:authority` a request's fields name (the last `host`, which a filter may
    have rewritten; `default` when none does, or it is empty) and the fields without
    `host`, since HTTP/2 carries it as a pseudo-header."""
    authority = b""
    fields: Fields = []
    for name, value in headers:
        if name == b"host":
            authority = value
        else:
            fields.append((name, value))
    return authority or default, fields


def response_block(status: int, headers: Sequence[tuple[bytes, bytes]]) -> Fields:
    block: Fields = [(b":status", str(status).encode())]
    block.extend(forwardable(headers))
    return block


def forwardable(headers: Sequence[tuple[bytes, bytes]]) -> Fields:
    """`headers` without connection-specific fields; `te` only as `trailers`."""
    kept: Fields = []
    for name, value in headers:
        if name in CONNECTION_SPECIFIC:
            if name == b"te" and value.strip().lower() == b"trailers":
                kept.append((name, b"trailers"))
            continue
        kept.append((name, value))
    return kept


def is_grpc(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.startswith(GRPC_CONTENT_TYPE)
    return False


def grpc_status_for(http_status: int) -> int:
    return _GRPC_STATUS_FOR_HTTP.get(http_status, GRPC_UNAVAILABLE)


def grpc_timeout(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    """The deadline a gRPC client set (`grpc-timeout: 250m`), in seconds; None if unset
    or malformed."""
    for name, value in headers:
        if name == b"grpc-timeout":
            digits, unit = value[:-1], value[-1:]
            scale = _GRPC_TIMEOUT_UNITS.get(unit)
            if scale is None or not digits.isdigit() or len(digits) > 8:
                return None
            return int(digits) * scale[0] / scale[1]
    return None


def local_reply_blocks(
    status: int, reason: str, detail: str, *, grpc: bool, retry_after: float | None = None
) -> tuple[Fields, bytes]:
    """The proxy's own answer to a stream: a header block and a body (empty for gRPC).

    Plain HTTP gets `status`, `x-mycelium-reason` and a one-line body. A gRPC client
    gets the trailers-only form its library understands: `:status 200` with
    `grpc-status` and `grpc-message` in the one and only header block (the gRPC spec
    says HTTP 200; Envoy answers the same way), `x-mycelium-reason` kept beside them.
    """
    reason_field = (b"x-mycelium-reason", reason.encode())
    if grpc:
        block: Fields = [
            (b":status", b"200"),
            (b"content-type", GRPC_CONTENT_TYPE),
            (b"grpc-status", str(grpc_status_for(status)).encode()),
            (b"grpc-message", _percent_encode(f"{reason}: {detail}")),
            reason_field,
        ]
        return block, b""
    body = f"{reason}: {detail}\n".encode()
    block = [
        (b":status", str(status).encode()),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        reason_field,
    ]
    if retry_after is not None:
        block.append((b"retry-after", str(int(retry_after)).encode()))
    return block, body


def _percent_encode(text: str) -> bytes:
    """grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2 spec, "Responses")."""
    out = bytearray()
    for byte in text.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += f"%{byte:02X}".encode()
    return bytes(out)


# --- flood defence ------------------------------------------------------------------------


@dataclass(slots=True)
class RateWindow:
    """Events counted per one-second window; `add` says whether the limit is passed."""

    limit: int
    window_start: float = 0.0
    count: int = 0

    def add(self, now: float) -> bool:
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.count = 0
        self.count += 1
        return self.count > self.limit


@dataclass(slots=True)
class FloodGuard:
    """Per-connection counters against rapid reset and control-frame floods.

    Each `*_received` returns an error code to close the connection with, or None."""

    resets: RateWindow = field(default_factory=lambda: RateWindow(MAX_RESETS_PER_SECOND))
    control: RateWindow = field(default_factory=lambda: RateWindow(MAX_CONTROL_FRAMES_PER_SECOND))
    unread_acks: int = 0
    refused: str = ""  # why the connection was closed, for logs and tests

    def reset_received(self, now: float) -> ErrorCodes | None:
        if self.resets.add(now):
            self.refused = "rapid_reset"
            return ErrorCodes.ENHANCE_YOUR_CALM
        return None

    def control_frame_received(self, now: float, *, peer_reading: bool) -> ErrorCodes | None:
        if peer_reading:
            self.unread_acks = 0
        else:
            self.unread_acks += 1
            if self.unread_acks > MAX_UNREAD_ACKS:
                self.refused = "control_frame_flood"
                return ErrorCodes.ENHANCE_YOUR_CALM
        if self.control.add(now):
            self.refused = "control_frame_flood"
            return ErrorCodes.ENHANCE_YOUR_CALM
        return None


# --- sending under flow control ---------------------------------------------------------


@dataclass(slots=True)
class _Outgoing:
    chunks: deque[bytes] = field(default_factory=deque)
    size: int = 0
    ended: bool = False  # no more data will be queued
    trailers: Fields | None = None
    # told how many body bytes left the buffer: taken by h2, or dropped with the stream
    on_sent: Callable[[int], None] | None = None


class SendBuffer:
    """What each stream still has to send, released to h2 as the peer's windows allow.

    `queue` data (and at last `end` the stream, with trailers or not); `flush` moves
    what fits into h2 and calls each stream's `on_sent` with the byte count, which is
    when the shell acknowledges the same bytes to the side they came from. So a peer
    that stops opening its window stops the other side too, and `buffered` never
    exceeds what the other side was allowed to send us.
    """

    def __init__(self) -> None:
        self._streams: dict[int, _Outgoing] = {}
        self.buffered = 0

    def open(self, stream_id: int, on_sent: Callable[[int], None] | None = None) -> None:
        self._streams[stream_id] = _Outgoing(on_sent=on_sent)

    def queue(self, stream_id: int, data: bytes) -> None:
        out = self._streams.get(stream_id)
        if out is None or out.ended or not data:
            return
        out.chunks.append(data)
        out.size += len(data)
        self.buffered += len(data)

    def end(self, stream_id: int, trailers: Fields | None = None) -> None:
        out = self._streams.get(stream_id)
        if out is not None:
            out.ended = True
            out.trailers = trailers

    def discard(self, stream_id: int) -> None:
        """Drop a stream's unsent bytes. `on_sent` hears of them as if sent: they were
        taken from the other side's window, which must get them back."""
        out = self._streams.pop(stream_id, None)
        if out is not None:
            self.buffered -= out.size
            if out.size and out.on_sent is not None:
                out.on_sent(out.size)

    @property
    def idle(self) -> bool:
        """Nothing left to send, not even a stream's end."""
        return not self._streams

    def pending(self, stream_id: int) -> int:
        out = self._streams.get(stream_id)
        return out.size if out is not None else 0

    def flush(self, conn: H2Connection) -> None:
        """Hand h2 whatever the windows allow, ending streams whose data is all sent."""
        for stream_id in list(self._streams):
            out = self._streams.get(stream_id)
            if out is None:
                continue  # discarded by a callback of an earlier stream
            try:
                self._flush_stream(conn, stream_id, out)
            except ProtocolError:  # the stream or connection closed meanwhile
                self.discard(stream_id)

    def _flush_stream(self, conn: H2Connection, stream_id: int, out: _Outgoing) -> None:
        sent = 0
        chunks = out.chunks
        while chunks:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = chunks[0]
            if len(chunk) > room:
                chunks[0] = chunk[room:]
                chunk = chunk[:room]
            else:
                chunks.popleft()
            conn.send_data(stream_id, chunk)
            sent += len(chunk)
        if sent:
            out.size -= sent
            self.buffered -= sent
            if out.on_sent is not None:
                out.on_sent(sent)
        if not chunks and out.ended and self._streams.pop(stream_id, None) is out:
            if out.trailers is not None:
                conn.send_headers(stream_id, out.trailers, end_stream=True)
            else:
                conn.end_stream(stream_id)


# --- graceful GOAWAY from an upstream -------------------------------------------------------

_FRAME_HEADER_BYTES = 9
_GOAWAY = 0x7


class GracefulGoawayFilter:
    """Takes graceful (NO_ERROR) GOAWAY frames out of an upstream's byte stream.

    h2 closes its whole connection state on any GOAWAY it receives, and then refuses the
    frames of streams the peer is still answering (RFC 9113 §6.8 says those complete).
    Servers send a graceful GOAWAY routinely (nginx after `keepalive_requests` streams),
    so the proxy handles it itself: `feed` returns the bytes for h2 without those frames,
    and the `last_stream_id` of each one it removed. Other frames pass through
    untouched, a partial frame header or GOAWAY frame waits for its remaining bytes.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._pass_left = 0  # bytes of the current (non-GOAWAY) frame still to pass

    def feed(self, data: bytes) -> tuple[bytes, list[int]]:
        buf = self._pending + data if self._pending else data
        self._pending = b""
        out: list[bytes] = []
        found: list[int] = []
        pos, end = 0, len(buf)
        while pos < end:
            if self._pass_left:
                take = min(self._pass_left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._pass_left -= take
                continue
            if end - pos < _FRAME_HEADER_BYTES:
                self._pending = buf[pos:]
                break
            length = int.from_bytes(buf[pos : pos + 3], "big")
            if buf[pos + 3] == _GOAWAY:
                if end - pos < _FRAME_HEADER_BYTES + length:
                    self._pending = buf[pos:]
                    break
                payload = buf[pos + _FRAME_HEADER_BYTES : pos + _FRAME_HEADER_BYTES + length]
                if len(payload) >= 8 and int.from_bytes(payload[4:8], "big") == 0:
                    found.append(int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF)
                    pos += _FRAME_HEADER_BYTES + length
                    continue
            out.append(buf[pos : pos + _FRAME_HEADER_BYTES])
            pos += _FRAME_HEADER_BYTES
            self._pass_left = length
        return (out[0] if len(out) == 1 else b"".join(out)), found
