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
"""

from __future__ import annotations

import json
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mycelium.discovery.errors import ProtocolViolation

# A full snapshot of a proxy with a few hundred services stays well below 1 MiB; 16 MiB
# leaves room for a mesh far beyond that while bounding what a bad peer can make us buffer.
MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")

PROTOCOL_VERSION = 1


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeInfo(_Message):
    """Who a proxy is. `id` is unique per proxy process and stable across reconnects."""

    id: str
    namespace: str = "default"
    workload: str | None = None  # the Workload name it registers as (None: not registered)
    service_account: str = "default"
    role: Literal["sidecar", "gateway", "waypoint", "ztunnel"] = "sidecar"
    labels: dict[str, str] = Field(default_factory=dict)
    address: str | None = None
    ports: list[int] = Field(default_factory=list)


class Hello(_Message):
    type: Literal["hello"] = "hello"
    protocol: int = PROTOCOL_VERSION
    node: NodeInfo
    token: str | None = None
    # the snapshot version the proxy holds, and entry name -> entry version within it
    version: str = ""
    held: dict[str, str] = Field(default_factory=dict)
    subscriptions: list[str] = Field(default_factory=list)


class Ack(_Message):
    type: Literal["ack"] = "ack"
    nonce: int
    version: str


class Nack(_Message):
    type: Literal["nack"] = "nack"
    nonce: int
    version: str
    reason: str


class Subscribe(_Message):
    """Ask for (or drop) the outbound config of services, by host name or address."""

    type: Literal["subscribe"] = "subscribe"
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class Heartbeat(_Message):
    type: Literal["heartbeat"] = "heartbeat"


class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    protocol: int = PROTOCOL_VERSION
    controller_version: str
    heartbeat_interval: float
    lease_ttl: float


class Entry(_Message):
    """One named piece of a proxy's config; `version` is a hash of `body`."""

    name: str
    version: str
    body: dict[str, Any]


class Push(_Message):
    type: Literal["push"] = "push"
    nonce: int
    version: str  # the snapshot version the proxy holds after applying this push
    full: bool  # True: `resources` is the whole snapshot; drop anything not in it
    resources: list[Entry] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


class Refusal(_Message):
    """The controller closes the stream; `code` says why in one word, `message` in prose."""

    type: Literal["refusal"] = "refusal"
    code: str
    message: str


type ClientMessage = Annotated[
    Hello | Ack | Nack | Subscribe | Heartbeat, Field(discriminator="type")
]
type ServerMessage = Annotated[Welcome | Push | Refusal | Heartbeat, Field(discriminator="type")]

_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_server_adapter: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def encode(message: _Message) -> bytes:
    """One frame: length prefix and compact JSON."""
    payload = message.model_dump_json(exclude_defaults=False).encode()
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolViolation(f"message of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(payload)) + payload


def parse_client_message(payload: bytes) -> ClientMessage:
    try:
        return _client_adapter.validate_json(payload)
    except ValidationError as exc:
        raise ProtocolViolation(f"malformed message from proxy: {_first_error(exc)}") from exc


def parse_server_message(payload: bytes) -> ServerMessage:
    try:
        return _server_adapter.validate_json(payload)
    except ValidationError as exc:
        raise ProtocolViolation(f"malformed message from controller: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


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
