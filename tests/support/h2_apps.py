"""Real HTTP/2 applications for the proxy's HTTP/2 tests, on loopback.

`H2EchoApp` is an h2c (prior knowledge) server built on h2. Every response says who
answered (`x-served-by`), echoes the request (`x-echo-method`, `x-echo-path`, the body
back, or a JSON record when there was none) and obeys query parameters:

- `status=503`      answer with that status
- `delay=0.5`       answer after that long
- `size=N`          send N bytes of body, honouring the client's flow-control windows
- `trailers=1`      end with trailers (`x-trailer-bytes`: body size, `grpc-status: 0`)
- `trailers=smuggle` the same, plus fields a trailer must not carry (`set-cookie`,
                    `content-length`, `location`): the proxy must drop them

It counts what a flow-control test needs: connections accepted, body bytes sent, and
whether a stream is waiting for window.

`GrpcEchoServer` is a grpcio server (in its own threads) with one unary method,
`/echo.Echo/Say`, bytes in and out: it answers `hello <body>`, or fails with the status
named by a `fail-with` metadata entry. The `h2_mesh` fixture wires both behind a
controller and a caller sidecar, like `proxy_mesh`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import grpc
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hpack import Encoder
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, SettingsFrame
from tests.support.controller import Api, controller_config
from tests.support.proxy_mesh import BASE, ProxyMesh, free_port_on

from mycelium.control.controller import Controller

GRPC_METHOD = "/echo.Echo/Say"
GRPC_CHAT = "/echo.Echo/Chat"
# A gRPC `details` service whose app listens on {port}, served by its own sidecar.
DETAILS_GRPC = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: details}}
spec:
  selector: {{app: details}}
  ports: [{{name: grpc, port: 9090, targetPort: {port}}}]
"""  # bidirectional streaming: two replies per message
# The proxy mesh's reviews, whose apps here speak h2c: its port says so by its name.
H2_BASE = BASE.replace("name: http, port: 9080", "name: http2, port: 9080")

RATINGS = """
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: ratings}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: grpc, port: 9090, targetPort: {port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: ratings-v1, labels: {{app: ratings, version: v1}}}}
spec: {{address: 127.0.0.13}}
"""


@dataclass
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)


class _H2ServerConnection(asyncio.Protocol):
    def __init__(self, app: H2EchoApp) -> None:
        self.app = app
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        # left, size, trailers ("" none, "1" ordinary, "smuggle" with forbidden fields)
        self.outgoing: dict[int, tuple[memoryview, int, str]] = {}
        self.processed = 0
        self.last_stream: int | None = None  # set once this connection said GOAWAY

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.app.connections += 1
        self.app.open_connections.add(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.open_connections.discard(self)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self.flush()
            assert self.transport is not None
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                if self.last_stream is not None and event.stream_id > self.last_stream:
                    continue  # after our GOAWAY: never processed, as the frame promised
                self.streams[event.stream_id] = _Stream(dict(event.headers))  # type: ignore[arg-type]
            elif isinstance(event, DataReceived):
                if event.stream_id not in self.streams:
                    continue
                self.streams[event.stream_id].body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, TrailersReceived):
                self.streams[event.stream_id].trailers = dict(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, StreamEnded):
                if event.stream_id in self.streams:
                    self._request_done(event.stream_id)
            elif isinstance(event, StreamReset):
                self.outgoing.pop(event.stream_id, None)
                self.app.resets += 1
                self.app.blocked = bool(self.outgoing)
            elif isinstance(event, WindowUpdated):
                self._send_more()
            elif isinstance(event, ConnectionTerminated):
                assert self.transport is not None
                self.transport.close()
        self.flush()

    def _request_done(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id)
        self.processed += 1
        limit = self.app.max_requests_per_connection
        if limit is not None and self.processed == limit and self.last_stream is None:
            # As nginx does after keepalive_requests: a graceful GOAWAY; streams the
            # client opened beyond this one will not be processed.
            # The frame is written by hand: h2 would refuse to answer the streams still
            # in progress once told the connection is closing, and nginx answers them.
            self.last_stream = stream_id
            self.flush()
            assert self.transport is not None
            goaway = GoAwayFrame(stream_id=0, last_stream_id=stream_id, error_code=0)
            self.transport.write(goaway.serialize())
        headers = stream.headers
        path = headers.get(":path", "/")
        query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        record = {
            "served_by": self.app.name,
            "method": headers.get(":method"),
            "path": path,
            "authority": headers.get(":authority"),
            "headers": {k: v for k, v in headers.items() if not k.startswith(":")},
            "body_bytes": len(stream.body),
            "trailers": stream.trailers,
        }
        self.app.seen.append(record)
        delay = float(query.get("delay", "0"))
        if delay:
            loop = asyncio.get_running_loop()
            loop.call_later(delay, self._respond, stream_id, query, record, bytes(stream.body))
        else:
            self._respond(stream_id, query, record, bytes(stream.body))

    def _respond(
        self, stream_id: int, query: dict[str, str], record: dict[str, Any], body: bytes
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        status = query.get("status", "200")
        response = [
            (":status", status),
            ("x-served-by", self.app.name),
            ("x-echo-method", str(record["method"])),
            ("x-echo-path", str(record["path"])),
        ]
        trailers = query.get("trailers", "")
        payload = (
            b"x" * int(query["size"]) if "size" in query else body or json.dumps(record).encode()
        )
        try:
            self.conn.send_headers(stream_id, response)
        except StreamClosedError:
            return
        self.outgoing[stream_id] = (memoryview(payload), len(payload), trailers)
        self._send_more()

    def _trailers(self, stream_id: int, size: int, kind: str) -> None:
        fields = [("x-trailer-bytes", str(size)), ("grpc-status", "0")]
        if kind == "smuggle":
            fields += [("set-cookie", "admin=1"), ("content-length", "0"), ("location", "/x")]
        self.conn.send_headers(stream_id, fields, end_stream=True)

    def _send_more(self) -> None:
        """Send response bodies as the client's windows allow."""
        for stream_id, (unsent, size, trailers) in list(self.outgoing.items()):
            left = unsent
            try:
                while left:
                    room = min(
                        self.conn.local_flow_control_window(stream_id),
                        self.conn.max_outbound_frame_size,
                    )
                    if room <= 0:
                        break
                    chunk, left = left[:room], left[room:]
                    self.conn.send_data(stream_id, bytes(chunk))
                    self.app.sent_bytes += len(chunk)
                if left:
                    self.outgoing[stream_id] = (left, size, trailers)
                    continue
                del self.outgoing[stream_id]
                if trailers:
                    self._trailers(stream_id, size, trailers)
                else:
                    self.conn.end_stream(stream_id)
            except StreamClosedError:
                self.outgoing.pop(stream_id, None)
        self.app.blocked = bool(self.outgoing)
        self.flush()


@dataclass
class H2EchoApp:
    name: str
    host: str
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    resets: int = 0
    sent_bytes: int = 0
    blocked: bool = False
    open_connections: set[_H2ServerConnection] = field(default_factory=set)
    max_requests_per_connection: int | None = None  # then GOAWAY, like nginx
    _server: asyncio.Server | None = None

    async def start(self) -> H2EchoApp:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _H2ServerConnection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.open_connections):
                if conn.transport is not None:
                    conn.transport.abort()
            await self._server.wait_closed()


class GrpcEchoServer:
    """A grpcio server with a generic unary method (Say) and a bidirectional streaming
    one (Chat); runs in grpcio's own threads."""

    def __init__(self, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self.calls: list[dict[str, str]] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "echo.Echo",
            {
                "Say": grpc.unary_unary_rpc_method_handler(self._say),
                "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self._server.add_insecure_port(self.address)

    def start(self) -> GrpcEchoServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait()

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield b"heard " + request
            yield b"again " + request

    def _say(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        self.calls.append(metadata)  # type: ignore[arg-type]
        fail = metadata.get("fail-with")
        if fail:
            context.set_trailing_metadata((("x-app-trailer", "sorry"),))
            context.abort(grpc.StatusCode[str(fail)], f"asked to fail with {fail}")
        context.set_trailing_metadata((("x-app-trailer", "fine"),))
        return b"hello " + request


@dataclass
class H2Mesh:
    """`ProxyMesh` with h2c apps as reviews v1/v2 and a gRPC `ratings` service."""

    mesh: ProxyMesh
    v1: H2EchoApp
    v2: H2EchoApp
    grpc_port: int
    grpc_server: GrpcEchoServer

    @property
    def outbound(self) -> tuple[str, int]:
        addr = self.mesh.caller.bound["outbound"]
        return addr.host, addr.port

    async def apply(self, text: str) -> None:
        mesh = self.mesh
        base = H2_BASE.format(port=mesh.app_port) + RATINGS.format(port=self.grpc_port)
        status, body = await mesh.api.apply(base + text)
        assert status == 200, body


@pytest.fixture
async def h2_mesh(tmp_path: Path) -> AsyncIterator[H2Mesh]:
    controller = Controller(controller_config(tmp_path / "home"))
    await controller.start()
    port = free_port_on("127.0.0.11", "127.0.0.12")
    grpc_port = free_port_on("127.0.0.13")
    v1 = await H2EchoApp("reviews-v1", "127.0.0.11", port).start()
    v2 = await H2EchoApp("reviews-v2", "127.0.0.12", port).start()
    grpc_server = GrpcEchoServer("127.0.0.13", grpc_port).start()
    session = aiohttp.ClientSession()
    api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
    status, body = await api.apply(H2_BASE.format(port=port) + RATINGS.format(port=grpc_port))
    assert status == 200, body
    mesh = ProxyMesh(controller, api, tmp_path / "home", v1, v2, None, session, port)  # type: ignore[arg-type]
    caller = mesh.proxy("productpage-0")
    await caller.start()
    mesh.caller = caller
    try:
        yield H2Mesh(mesh, v1, v2, grpc_port, grpc_server)
    finally:
        await caller.stop()
        await session.close()
        await v1.stop()
        await v2.stop()
        grpc_server.stop()
        await controller.stop()


# --- a test client -------------------------------------------------------------------------


@dataclass
class H2Response:
    stream_id: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    reset_code: int | None = None
    done: asyncio.Future[None] | None = None


class H2Client:
    """An h2c (prior knowledge) client on a real socket, for tests.

    With `auto_ack=False` it never opens its windows by itself: the test reads slowly
    by calling `ack`. `goaway` holds the error code of a GOAWAY received, `closed` is
    set when the server closed the connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auto_ack: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.auto_ack = auto_ack
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.responses: dict[int, H2Response] = {}
        self.goaway: int | None = None
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._uploads: dict[int, tuple[bytes, list[tuple[str, str]] | None]] = {}

    @classmethod
    async def connect(
        cls, host: str, port: int, *, auto_ack: bool = True, window: int | None = None
    ) -> H2Client:
        """`window`: the receive window of each stream and of the connection (default
        65535, RFC 9113's initial window)."""
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer, auto_ack)
        if window is not None:
            client.conn.local_settings = Settings(
                client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        client.conn.initiate_connection()
        if window is not None and window > 65535:
            client.conn.increment_flow_control_window(window - 65535)
        client.flush()
        client._task = asyncio.get_running_loop().create_task(client._read())
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()

    def start(
        self,
        path: str,
        *,
        authority: str = "reviews:9080",
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        trailers: list[tuple[str, str]] | None = None,
    ) -> H2Response:
        stream_id = self.conn.get_next_available_stream_id()
        block = [(":method", method), (":scheme", "http"), (":authority", authority)]
        block += [(":path", path), *(headers or [])]
        ends = not body and not trailers
        self.conn.send_headers(stream_id, block, end_stream=ends)
        if not ends:
            self._uploads[stream_id] = (body, trailers)
            self._pump()
        response = H2Response(stream_id, done=asyncio.get_running_loop().create_future())
        self.responses[stream_id] = response
        self.flush()
        return response

    async def request(self, path: str, **kwargs: Any) -> H2Response:
        response = self.start(path, **kwargs)
        assert response.done is not None
        await asyncio.wait_for(response.done, 10)
        return response

    def _pump(self) -> None:
        """Send request bodies as the server's windows allow."""
        for stream_id, (unsent, trailers) in list(self._uploads.items()):
            body = unsent
            while body:
                room = min(
                    self.conn.local_flow_control_window(stream_id),
                    self.conn.max_outbound_frame_size,
                )
                if room <= 0:
                    break
                self.conn.send_data(stream_id, body[:room])
                body = body[room:]
            if body:
                self._uploads[stream_id] = (body, trailers)
                continue
            del self._uploads[stream_id]
            if trailers:
                self.conn.send_headers(stream_id, trailers, end_stream=True)
            else:
                self.conn.end_stream(stream_id)

    def ack(self, stream_id: int, size: int) -> None:
        self.conn.acknowledge_received_data(size, stream_id)
        self.flush()

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._event(event)
                self._pump()
                self.flush()
        except (ConnectionError, ProtocolError):
            pass
        finally:
            self.closed.set()
            for response in self.responses.values():
                if response.done is not None and not response.done.done():
                    response.done.set_exception(ConnectionResetError("connection closed"))
                    response.done.exception()  # a test that does not wait for it is fine

    def _event(self, event: object) -> None:
        stream_id = getattr(event, "stream_id", 0)
        response = self.responses.get(stream_id)
        if isinstance(event, ConnectionTerminated):
            self.goaway = int(event.error_code) if event.error_code is not None else 0
        elif response is None:
            return
        elif isinstance(event, ResponseReceived):
            headers = dict(event.headers)  # type: ignore[arg-type]
            response.status = int(headers.pop(":status"))
            response.headers = headers
        elif isinstance(event, DataReceived):
            response.body += event.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, TrailersReceived):
            response.trailers = dict(event.headers)  # type: ignore[arg-type]
        elif isinstance(event, StreamEnded):
            if response.done is not None and not response.done.done():
                response.done.set_result(None)
        elif isinstance(event, StreamReset):
            response.reset_code = int(event.error_code) if event.error_code is not None else 0
            if response.done is not None and not response.done.done():
                response.done.set_result(None)


class HostileH2:
    """A client that writes HTTP/2 frames as it likes (hyperframe and HPACK, no state
    machine to stop it), and reads the server's frames back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()
        self.received: list[Frame] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> HostileH2:
        reader, writer = await asyncio.open_connection(host, port)
        hostile = cls(reader, writer)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize())
        return hostile

    def block(self, path: str, authority: str = "reviews:9080", **extra: str) -> bytes:
        fields = [(":method", "GET"), (":scheme", "http"), (":authority", authority)]
        fields += [(":path", path), *extra.items()]
        return self.encoder.encode(fields)

    def headers(self, stream_id: int, block: bytes, *, end_stream: bool = True) -> HeadersFrame:
        frame = HeadersFrame(stream_id, block)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def send(self, *frames: Frame) -> None:
        self.writer.write(b"".join(f.serialize() for f in frames))

    async def goaway(self, timeout: float = 10) -> GoAwayFrame | None:
        """Read until the server sends GOAWAY (returned) or closes (None)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    head = await self.reader.readexactly(9)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                frame, length = Frame.parse_frame_header(memoryview(head))
                frame.parse_body(memoryview(await self.reader.readexactly(length)))
                self.received.append(frame)
                if isinstance(frame, GoAwayFrame):
                    return frame

    def close(self) -> None:
        self.writer.close()
