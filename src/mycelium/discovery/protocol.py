"""The discovery protocol between the controller and its proxies, without any I/O.

A long-lived TLS stream carries frames: a 4-byte big-endian length, then one JSON
message. The proxy speaks first (`Hello`: who it is, what it holds, what it wants); the
controller answers `Welcome`, then `Push`es config. Every push has a `nonce` and the
snapshot `version` it leads to; the proxy answers `Ack` or `Nack(reason)` for that nonce
and keeps its previous snapshot on a NACK. Pushes are deltas against what the proxy
acknowledged: changed entries in `resources`, vanished ones in `removed`. A reconnecting
proxy lists the entry versions it holds in its `Hello`, so the controller resumes with a
delta instead of a full snapshot.

`FrameDecoder` turns bytes into messages; `encode` turns a message into bytes.

Messages are msgspec Structs rather than pydantic models: this module and `config`
are what every sidecar imports, and msgspec keeps a proxy's memory some 20 MB smaller
while decoding and validating faster.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any, Literal

import msgspec

from mycelium.discovery.errors import ProtocolViolation

# A full snapshot of a proxy with a few hundred services stays well below 1 MiB; 16 MiB
# leaves room for a mesh far beyond that while bounding what a bad peer can make us buffer.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")

PROTOCOL_VERSION = 1


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who a proxy is. `id` is unique per proxy process and stable across reconnects."""

    id: str
    namespace: str = "default"
    workload: str | None = None  # the Workload name it registers as (None: not registered)
    service_account: str = "default"
    role: Literal["sidecar", "gateway", "waypoint", "ztunnel"] = "sidecar"
    labels: dict[str, str] = {}
    address: str | None = None
    ports: list[int] = []


class _Message(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    pass


class Hello(_Message, tag="hello", frozen=True, kw_only=True):
    protocol: int = PROTOCOL_VERSION
    node: NodeInfo
    token: str | None = None
    # the snapshot version the proxy holds, and entry name -> entry version within it
    version: str = ""
    held: dict[str, str] = {}
    subscriptions: list[str] = []
    # False: register the workload only when `join` comes (a pod whose app is not ready)
    registered: bool = True


class Ack(_Message, tag="ack", frozen=True, kw_only=True):
    nonce: int
    version: str


class Nack(_Message, tag="nack", frozen=True, kw_only=True):
    nonce: int
    version: str
    reason: str


class Subscribe(_Message, tag="subscribe", frozen=True, kw_only=True):
    """Ask for (or drop) the outbound config of services, by host name or address."""

    add: list[str] = []
    remove: list[str] = []


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


class TrafficRow(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """What a proxy forwarded between two reports, for one source/destination pair."""

    source_workload: str
    source_namespace: str
    destination_service: str  # the service key, "reviews.bookinfo"
    destination_workload: str
    destination_namespace: str
    route: str  # the rule's name, "" for the default route
    protocol: str  # "http", "grpc" or "tcp"
    mtls: bool
    requests: int
    errors: int  # answered 5xx, or failed before an answer
    latency_buckets: list[int]  # per LATENCY_BUCKETS_MS bound, then one for beyond


class TelemetryReport(_Message, tag="telemetry", frozen=True, kw_only=True):
    """Traffic since the proxy's last report: the dashboard's and `myc stat`'s data
    (the controller cannot scrape proxies inside pods)."""

    rows: list[TrafficRow] = []


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


class TapEvents(_Message, tag="tap_events", frozen=True, kw_only=True):
    """A batch of a tap's events. `dropped` counts matching requests left out since the
    last batch (over the rate); `ended` is set on the tap's last batch on this proxy:
    "max", "deadline" or "stopped"."""

    id: str
    events: list[TapEvent] = []
    dropped: int = 0
    ended: str = ""


type ClientMessage = (
    Hello
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
    | Heartbeat
    | CertificateIssued
    | CertificateRefused
    | TrustBundle
    | TapStart
    | TapStop
)

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
    try:
        message: ClientMessage = _client_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolViolation(f"malformed message from proxy: {exc}") from exc
    return message


def parse_server_message(payload: bytes) -> ServerMessage:
    try:
        message: ServerMessage = _server_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise ProtocolViolation(f"malformed message from controller: {exc}") from exc
    return message


class FrameDecoder:
    """Accumulates bytes and yields complete frame payloads, in order."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise ProtocolViolation(
                    f"peer announced a frame of {length} bytes (limit {self._max_frame})"
                )
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            frames.append(bytes(self._buffer[_HEADER.size : end]))
            del self._buffer[:end]
        return frames


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
