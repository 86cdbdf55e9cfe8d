"""The discovery protocol between the controller and its proxies, without any I/O.

A long-lived TLS stream carries frames: a 4-byte big-endian length, then one JSON
message. The proxy speaks first (`Hello`: who it is, what it holds, what it wants); the
controller answers `Welcome`, then `Push`es config. Every push has a `nonce` and the
snapshot `version` it leads to; the proxy answers `Ack` or `Nack(reason)` for that nonce
and keeps its previous snapshot on a NACK. Pushes are deltas against what the proxy
acknowledged: changed entries in `resources`, vanished ones in `removed`. A reconnecting
proxy lists the entry versions it holds in its `Hello`, so the controller resumes with a
delta instead of a full snapshot.

A stream starts `Hello` then `Resume`. The hello is only who the proxy is and what
proves it, so that the controller reads a few KiB at most from a peer it has not
authenticated yet; what the proxy holds and wants, which can be large, comes in the
`Resume` after the controller let it in. Every message from a proxy has a size limit
of its own (`MAX_MESSAGE_BYTES`), and its lists and strings have bounds (`msgspec.Meta`)
that decoding checks: a proxy cannot make the controller keep more than they allow.

`FrameDecoder` turns bytes into messages; `encode` turns a message into bytes.

Messages are msgspec Structs rather than pydantic models: this module and `config`
are what every sidecar imports, and msgspec keeps a proxy's memory some 20 MB smaller
while decoding and validating faster.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from mycelium.discovery.errors import ProtocolViolation

# A full snapshot of a proxy with a few hundred services stays well below 1 MiB; 16 MiB
# leaves room for a mesh far beyond that while bounding what a bad peer can make us buffer.
# This bounds what the controller sends; what proxies send has the smaller limits below.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")

# 2: the hello no longer carries what the proxy holds; `resume` does, after it.
PROTOCOL_VERSION = 2

# --- bounds on what a proxy may send ------------------------------------------------------
# Kubernetes' own limits where a field is a Kubernetes name: a DNS subdomain (253), a
# label (63), a qualified label key (a 253-character prefix, "/", a 63-character name).
NAME_CHARS = 253
LABEL_VALUE_CHARS = 63
LABEL_KEY_CHARS = 253 + 1 + 63
# A pod with more labels than this is not one a mesh was built for (bookinfo's have two).
MAX_LABELS = 32
# A workload exposes a handful of ports; 128 leaves room for a gateway's listeners.
MAX_PORTS = 128
# A join token is a signed JWT of some 300 characters.
TOKEN_CHARS = 4096
# A subscription is a service's host name or address, with a port: a DNS name and ":65535".
REFERENCE_CHARS = NAME_CHARS + 6
# The services one proxy can subscribe to. Istio's users scope a sidecar to the few
# dozen services it calls (the Sidecar resource) because every one costs memory; 1,024
# is far beyond any real caller, and bounds the bundles one proxy makes us compile.
MAX_SUBSCRIPTIONS = 1024
# A config entry's name ("cluster/<service>|<subset>|<port>": a DNS name, a label,
# a port and a prefix) and version (16 hex digits, with room).
ENTRY_NAME_CHARS = 512
VERSION_CHARS = 32
# Entries a resume lists: a handful per subscribed service (route, clusters per subset,
# endpoints) and the proxy's own. A proxy holding more asks for a full snapshot instead
# (discovery/client.py), so this bounds the message, not the mesh.
MAX_HELD_ENTRIES = 8 * MAX_SUBSCRIPTIONS
# A NACK's reason is an exception's message; the proxy cuts it to this before sending.
REASON_CHARS = 4096

type _Name = Annotated[str, msgspec.Meta(max_length=NAME_CHARS)]
type _Reference = Annotated[str, msgspec.Meta(max_length=REFERENCE_CHARS)]
type _Version = Annotated[str, msgspec.Meta(max_length=VERSION_CHARS)]
type _Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
type _Count = Annotated[int, msgspec.Meta(ge=0)]


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who a proxy is. `id` is unique per proxy process and stable across reconnects."""

    id: _Name
    namespace: Annotated[str, msgspec.Meta(max_length=LABEL_VALUE_CHARS)] = "default"
    # the Workload name it registers as (None: not registered)
    workload: _Name | None = None
    service_account: _Name = "default"
    role: Literal["sidecar", "gateway", "waypoint", "ztunnel"] = "sidecar"
    labels: Annotated[
        dict[
            Annotated[str, msgspec.Meta(max_length=LABEL_KEY_CHARS)],
            Annotated[str, msgspec.Meta(max_length=LABEL_VALUE_CHARS)],
        ],
        msgspec.Meta(max_length=MAX_LABELS),
    ] = {}
    address: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # an IP address
    ports: Annotated[list[_Port], msgspec.Meta(max_length=MAX_PORTS)] = []
    # host:port where a Prometheus on the host scrapes its metrics (None: not said)
    metrics: Annotated[str, msgspec.Meta(max_length=80)] | None = None


class _Message(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    pass


class Hello(_Message, tag="hello", frozen=True, kw_only=True):
    """Who the proxy is and what proves it: the first message, read before the
    controller knows whether to trust the peer, so it stays small (`MAX_HELLO_BYTES`)."""

    protocol: int = PROTOCOL_VERSION
    node: NodeInfo
    token: Annotated[str, msgspec.Meta(max_length=TOKEN_CHARS)] | None = None
    # False: register the workload only when `join` comes (a pod whose app is not ready)
    registered: bool = True


class Resume(_Message, tag="resume", frozen=True, kw_only=True):
    """The second message: the snapshot version the proxy holds with entry name ->
    entry version within it (empty for a first start), and the services it wants.
    The controller pushes the first delta against this."""

    version: _Version = ""
    held: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=ENTRY_NAME_CHARS)], _Version],
        msgspec.Meta(max_length=MAX_HELD_ENTRIES),
    ] = {}
    subscriptions: Annotated[list[_Reference], msgspec.Meta(max_length=MAX_SUBSCRIPTIONS)] = []


class Ack(_Message, tag="ack", frozen=True, kw_only=True):
    nonce: int
    version: _Version


class Nack(_Message, tag="nack", frozen=True, kw_only=True):
    nonce: int
    version: _Version
    reason: Annotated[str, msgspec.Meta(max_length=REASON_CHARS)]


class Subscribe(_Message, tag="subscribe", frozen=True, kw_only=True):
    """Ask for (or drop) the outbound config of services, by host name or address."""

    add: Annotated[list[_Reference], msgspec.Meta(max_length=MAX_SUBSCRIPTIONS)] = []
    remove: Annotated[list[_Reference], msgspec.Meta(max_length=MAX_SUBSCRIPTIONS)] = []


class Heartbeat(_Message, tag="heartbeat", frozen=True, kw_only=True):
    pass


class Leave(_Message, tag="leave", frozen=True, kw_only=True):
    """Deregister the proxy's workload now: it is shutting down cleanly (not at lease
    expiry, so nobody is sent to it while the lease runs out), or its pod is about to
    stop (the stream stays open)."""


class Join(_Message, tag="join", frozen=True, kw_only=True):
    """Register the proxy's workload now (its `hello` said `registered: false`, or it
    left): its app is ready for traffic."""


# Istio's default buckets for istio_request_duration_milliseconds (upper bounds, ms);
# a row's `latency_buckets` has one more count, for what took longer than the last.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip


# Rows in one report: one per (destination workload, route, protocol, mTLS) this
# proxy called in 5 s. A caller of a few dozen services with a few routes and a few
# replicas each has a few hundred; a proxy with more sends several reports.
MAX_TRAFFIC_ROWS = 1024


class TrafficRow(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What a proxy forwarded between two reports, for one source/destination pair."""

    # Istio's label names. A workload is a pod's Deployment (or a registered Workload).
    source_workload: _Name
    source_workload_namespace: _Name
    destination_service: _Name  # the service key, "reviews.bookinfo"
    destination_workload: _Name
    destination_workload_namespace: _Name
    route: Annotated[str, msgspec.Meta(max_length=ENTRY_NAME_CHARS)]  # "" for the default
    protocol: Literal["http", "grpc", "tcp"]
    mtls: bool
    requests: _Count
    errors: _Count  # answered 5xx, or failed before an answer
    # per LATENCY_BUCKETS_MS bound, then one for beyond
    latency_buckets: Annotated[list[_Count], msgspec.Meta(max_length=len(LATENCY_BUCKETS_MS) + 1)]


class TelemetryReport(_Message, tag="telemetry", frozen=True, kw_only=True):
    """Traffic since the proxy's last report: the dashboard's and `myc stat`'s data
    (the controller cannot scrape proxies inside pods)."""

    rows: Annotated[list[TrafficRow], msgspec.Meta(max_length=MAX_TRAFFIC_ROWS)] = []


class Welcome(_Message, tag="welcome", frozen=True, kw_only=True):
    protocol: int = PROTOCOL_VERSION
    controller_version: str
    heartbeat_interval: float
    lease_ttl: float
    trust_domain: str = "cluster.local"


class TrustBundle(_Message, tag="trust_bundle", frozen=True, kw_only=True):
    """The roots to verify peers and the controller with, sent after the welcome and
    again whenever the CA changes (a root rotation). `signer` is the key id (hex) of
    the certificate that signs now: a proxy whose SVID another key signed renews
    within `renew_within` seconds, at a random moment, so a fleet moves over by itself
    without renewing all at once."""

    bundle: str  # PEM, one or more roots
    signer: str
    renew_within: float


class CertificateRequest(_Message, tag="csr", frozen=True, kw_only=True):
    """Sign this CSR (PEM). The identity comes from `token` (a join token: the first
    certificate) or from `current` (the SVID held: a renewal), whose key signed the
    CSR's DER into `proof` (base64)."""

    request_id: int
    csr: str
    token: str = ""
    current: str = ""
    proof: str = ""


class CertificateIssued(_Message, tag="certificate", frozen=True, kw_only=True):
    request_id: int
    certificate: str  # PEM: the SVID
    trust_bundle: str  # PEM: the roots to verify peers with
    expires_at: float  # unix time


class CertificateRefused(_Message, tag="certificate_refused", frozen=True, kw_only=True):
    """`reason` in one word (token_replayed, identity_mismatch...), `message` in prose."""

    request_id: int
    reason: str
    message: str


class Entry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One named piece of a proxy's config; `version` is a hash of `body`."""

    name: str
    version: str
    body: dict[str, Any]


class Push(_Message, tag="push", frozen=True, kw_only=True):
    nonce: int
    version: str  # the snapshot version the proxy holds after applying this push
    full: bool  # True: `resources` is the whole snapshot; drop anything not in it
    resources: list[Entry] = []
    removed: list[str] = []


class Refusal(_Message, tag="refusal", frozen=True, kw_only=True):
    """The controller closes the stream; `code` says why in one word, `message` in prose."""

    code: str
    message: str


class MessageRefused(_Message, tag="message_refused", frozen=True, kw_only=True):
    """The controller refused one message (`refused`: its type, "" when it could not be
    read) and the stream goes on: over a bound, malformed, or not the proxy's to send.
    `reason` in one word, `message` in prose."""

    refused: str
    reason: str
    message: str


# --- tap: live requests, streamed from proxies through the controller (docs/tap.md) ---

# A tap asks for at most this many events per second from each proxy; more are counted
# as dropped. A busy proxy must not flood the controller (or the operator's terminal).
DEFAULT_TAP_RATE = 100
MAX_TAP_RATE = 1000
# The status filter: one code ("503") or a class ("5xx").
_STATUS_FILTER = re.compile(r"^(?:[1-5][0-9][0-9]|[1-5]xx)$")


class TapFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which finished requests a tap reports; an empty field matches everything."""

    path_prefix: str = ""
    method: str = ""  # exact, upper case
    authority: str = ""  # exact, as the client sent it (port included if it sent one)
    status: str = ""  # "503", or a class: "5xx"
    direction: str = ""  # "inbound", "outbound", "gateway", "local"

    def __post_init__(self) -> None:
        if self.status and not _STATUS_FILTER.match(self.status):
            raise ValueError(f"status filter {self.status!r} must be a code (503) or a class (5xx)")
        if self.path_prefix and not self.path_prefix.startswith("/"):
            raise ValueError(f"path prefix {self.path_prefix!r} must start with /")


class TapStart(_Message, tag="tap_start", frozen=True, kw_only=True):
    """Report finished requests matching `filter` under `id`: at most `max` of them
    (0: no limit), for at most `seconds`, at most `rate` a second. Starting an id the
    proxy already taps replaces that tap."""

    id: str
    filter: TapFilter = TapFilter()
    max: int = 0
    seconds: float
    rate: int = DEFAULT_TAP_RATE

    def __post_init__(self) -> None:
        if self.max < 0 or self.seconds <= 0 or not 0 < self.rate <= MAX_TAP_RATE:
            raise ValueError("a tap needs max >= 0, seconds > 0 and 0 < rate <= 1000")


class TapStop(_Message, tag="tap_stop", frozen=True, kw_only=True):
    id: str


# Events in one batch: the proxy sends at most 100 (telemetry/tap.BATCH_EVENTS).
MAX_TAP_BATCH = 200
# A proxy cuts a tapped path or authority to this, so that a batch of BATCH_EVENTS
# stays far below its message limit (a person reading a tap needs no more).
TAP_FIELD_CHARS = 2048


class TapEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One finished request, as a tap shows it."""

    ts: float  # unix time the request finished
    direction: str
    protocol: str  # HTTP/1.1, HTTP/2
    method: str
    path: str
    authority: str
    service: str  # the Service it was for ("" if none)
    status: int  # 0: no response was sent
    latency_ms: float
    source: str  # the client's address
    source_principal: str | None  # its SPIFFE ID when it came over mTLS
    destination: str  # the endpoint (host:port) it went to, "" if none
    reason: str  # x-mycelium-reason, "" when the upstream answered
    response_flags: str
    # The mesh leg (sidecar to sidecar): whether it carried mTLS, and the SPIFFE ID on
    # its other end. Inbound, that is the caller's; outbound, the destination's (the
    # app's own leg to its sidecar is plaintext by design, and not what this says).
    mesh_mtls: bool = False
    mesh_peer: str | None = None


class TapEvents(_Message, tag="tap_events", frozen=True, kw_only=True):
    """A batch of a tap's events. `dropped` counts matching requests left out since the
    last batch (over the rate); `ended` is set on the tap's last batch on this proxy:
    "max", "deadline" or "stopped"."""

    id: Annotated[str, msgspec.Meta(max_length=64)]
    events: Annotated[list[TapEvent], msgspec.Meta(max_length=MAX_TAP_BATCH)] = []
    dropped: _Count = 0
    ended: Annotated[str, msgspec.Meta(max_length=64)] = ""


type ClientMessage = (
    Hello
    | Resume
    | Ack
    | Nack
    | Subscribe
    | Heartbeat
    | Leave
    | Join
    | CertificateRequest
    | TapEvents
    | TelemetryReport
)
type ServerMessage = (
    Welcome
    | Push
    | Refusal
    | MessageRefused
    | Heartbeat
    | CertificateIssued
    | CertificateRefused
    | TrustBundle
    | TapStart
    | TapStop
)

# What each message from a proxy may weigh, encoded. The hello is read before the peer
# is authenticated: its largest legitimate form (every NodeInfo field at its bound, a
# token) is some 18 KiB, measured in tests/unit/discovery/test_message_bounds.py, so a
# peer without credentials makes the controller buffer no more than this.
MAX_HELLO_BYTES = 24 * 1024
MAX_MESSAGE_BYTES: dict[str, int] = {
    "hello": MAX_HELLO_BYTES,
    # every held entry and subscription at its bound (some 4.8 MB): see the test above
    "resume": 6 * 1024 * 1024,
    "ack": 1024,
    "nack": 16 * 1024,
    "subscribe": 1024 * 1024,
    "heartbeat": 1024,
    "leave": 1024,
    "join": 1024,
    # a CSR (under 1 KiB), the SVID with its chain, and a signature
    "csr": 64 * 1024,
    # MAX_TAP_BATCH events, each under 5 KiB with its path and authority cut
    "tap_events": 2 * 1024 * 1024,
    # MAX_TRAFFIC_ROWS rows, each some 2.3 KB with every field at its bound
    "telemetry": 4 * 1024 * 1024,
}
# A frame from an authenticated proxy larger than any message may be is skipped, unread.
MAX_CLIENT_FRAME_BYTES = max(MAX_MESSAGE_BYTES.values())


# From the type aliases, so that a message added to one cannot be forgotten in the other.
_client_decoder = msgspec.json.Decoder(ClientMessage.__value__)
_server_decoder = msgspec.json.Decoder(ServerMessage.__value__)
_encoder = msgspec.json.Encoder()


def encode(message: _Message) -> bytes:
    """One frame: length prefix and compact JSON."""
    payload = _encoder.encode(message)
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolViolation(f"message of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def parse_client_message(payload: bytes) -> ClientMessage:
    """The message in `payload`; `ProtocolViolation` when it is malformed, breaks a
    bound, or weighs more than its type may (`MAX_MESSAGE_BYTES`)."""
    try:
        message: ClientMessage = _client_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolViolation(f"malformed message from proxy: {exc}") from exc
    tag = message_type(message)
    if len(payload) > MAX_MESSAGE_BYTES[tag]:
        raise MessageTooLarge(tag, len(payload))
    return message


def message_type(message: _Message) -> str:
    """The message's `type` on the wire ("hello", "telemetry"...)."""
    return str(type(message).__struct_config__.tag)


class MessageTooLarge(ProtocolViolation):
    def __init__(self, tag: str, size: int) -> None:
        super().__init__(
            f"a {tag} message of {size} bytes exceeds its limit of {MAX_MESSAGE_BYTES[tag]}"
        )
        self.tag = tag
        self.size = size


def parse_server_message(payload: bytes) -> ServerMessage:
    try:
        message: ServerMessage = _server_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolViolation(f"malformed message from controller: {exc}") from exc
    return message


@dataclass(frozen=True, slots=True)
class SkippedFrame:
    """A frame over the decoder's limit, passed over without being buffered."""

    length: int


class FrameDecoder:
    """Turns bytes into frame payloads, in order: `receive` what arrived, then take
    frames with `next_frame` until it says None (more bytes needed), or all of them
    at once with `feed`.

    A frame announced longer than `max_frame` raises `FrameTooLarge` as soon as its
    header is in: nothing of it is buffered. With `skip_oversized`, such a frame is
    instead passed over as it arrives and reported as a `SkippedFrame` in its place, so
    a stream whose framing is intact survives one bad message. `relimit` changes both
    between frames (a peer trusted with more once it is authenticated)."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES, *, skip_oversized: bool = False) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self._skip_oversized = skip_oversized
        self._skipping = 0  # bytes of an oversized frame still to pass over

    def relimit(self, max_frame: int, *, skip_oversized: bool) -> None:
        self._max_frame = max_frame
        self._skip_oversized = skip_oversized

    def receive(self, data: bytes) -> None:
        if self._skipping:
            passed = min(self._skipping, len(data))
            self._skipping -= passed
            data = data[passed:]
        self._buffer += data

    def next_frame(self) -> bytes | SkippedFrame | None:
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack_from(buffer)
        if length > self._max_frame:
            if not self._skip_oversized:
                raise FrameTooLarge(length, self._max_frame)
            passed = min(length, len(buffer) - _HEADER.size)
            del buffer[: _HEADER.size + passed]
            self._skipping = length - passed
            return SkippedFrame(length)
        end = _HEADER.size + length
        if len(buffer) < end:
            return None
        frame = bytes(buffer[_HEADER.size : end])
        del buffer[:end]
        return frame

    def feed(self, data: bytes) -> list[bytes]:
        """Every complete frame in what has arrived so far (skipped ones left out)."""
        self.receive(data)
        frames: list[bytes] = []
        while (frame := self.next_frame()) is not None:
            if isinstance(frame, bytes):
                frames.append(frame)
        return frames


class FrameTooLarge(ProtocolViolation):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"peer announced a frame of {length} bytes (limit {limit})")
        self.length = length
        self.limit = limit


def encode_entry(name: str, version: str, body: dict[str, Any]) -> bytes:
    """An `Entry` as JSON, for `encode_push`: the server serialises each entry once."""
    return json.dumps(
        {"name": name, "version": version, "body": body}, separators=(",", ":")
    ).encode()


def encode_push(
    nonce: int, version: str, full: bool, entries: list[bytes], removed: list[str]
) -> bytes:
    """The frame of a `Push` from pre-encoded entries (see `encode_entry`).

    Equivalent to `encode(Push(...))`; a push to thousands of proxies then costs a few
    byte joins each instead of a model serialisation each.
    """
    payload = b"".join(
        [
            b'{"type":"push","nonce":%d,"version":%s,"full":%s,"resources":['
            % (nonce, json.dumps(version).encode(), b"true" if full else b"false"),
            b",".join(entries),
            b'],"removed":',
            json.dumps(removed, separators=(",", ":")).encode(),
            b"}",
        ]
    )
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolViolation(f"push of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def canonical_json(body: dict[str, Any]) -> bytes:
    """The bytes an entry's version is computed from: sorted keys, no whitespace."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
