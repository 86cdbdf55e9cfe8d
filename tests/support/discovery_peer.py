"""Peers of the discovery port for hostile-input tests: a raw client that speaks the
frame format (or breaks it) from any loopback address, and the well-behaved proxy whose
pushes must keep arriving while the others misbehave."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.controller import Mesh

from mycelium.discovery import protocol as p
from mycelium.discovery.client import DiscoveryClient, Snapshot

ROUTE = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - timeout: %dms
    backendRefs: [{name: reviews}]
"""


def _timeout_ms(snapshot: Snapshot) -> int | None:
    entry = snapshot.get("route/reviews.default")
    if entry is None:
        return None
    timeout = entry.body["http_rules"][0].get("timeout")
    return None if timeout is None else round(timeout * 1000)


@dataclass
class WatchedProxy:
    """A well-behaved proxy subscribed to `reviews`; `push_latency` changes the route
    and says how long it took to hold the change."""

    mesh: Mesh
    client: DiscoveryClient
    timeout_ms: int = 1000

    async def push_latency(self) -> float:
        self.timeout_ms += 1
        wanted = self.timeout_ms
        started = time.monotonic()
        status, body = await self.mesh.api.apply(ROUTE % wanted)
        assert status == 200, body
        await self.client.wait_for(lambda snapshot: _timeout_ms(snapshot) == wanted, 10)
        return time.monotonic() - started


async def watched_proxy(mesh: Mesh) -> WatchedProxy:
    """Apply the route and connect the proxy that watches it."""
    status, body = await mesh.api.apply(ROUTE % 1000)
    assert status == 200, body
    client = mesh.client("watched-0", subscriptions=["reviews"])
    await client.start()
    await client.wait_for(lambda snapshot: _timeout_ms(snapshot) == 1000, 10)
    return WatchedProxy(mesh, client)


class RawPeer:
    """A TLS connection to the discovery port that sends whatever it is told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._decoder = p.FrameDecoder()
        self._pending: list[p.ServerMessage] = []

    @classmethod
    async def connect(
        cls,
        port: int,
        ca: Path,
        *,
        source: str = "127.0.0.1",
        tls: bool = True,
        receive_buffer: int | None = None,
    ) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # a small window: the kernel cannot read for us
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        context = ssl.create_default_context(cafile=str(ca)) if tls else None
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=context, server_hostname="127.0.0.1" if tls else None
        )
        return cls(reader, writer)

    def send(self, *messages: p.ClientMessage) -> None:
        self.writer.write(b"".join(p.encode(m) for m in messages))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_payload(self, payload: bytes) -> None:
        """One frame around `payload`, whatever it holds."""
        self.writer.write(len(payload).to_bytes(4, "big") + payload)

    async def hello(self, node_id: str, **node: object) -> p.Welcome:
        """Say hello and resume as a new anonymous proxy; the welcome."""
        self.send(p.Hello(node=p.NodeInfo(id=node_id, **node)), p.Resume())  # type: ignore[arg-type]
        return await self.next_of(p.Welcome)

    async def next_message(self, timeout: float = 5.0) -> p.ServerMessage | None:
        """The next message, or None when the controller closed the stream."""
        async with asyncio.timeout(timeout):
            while not self._pending:
                data = await self.reader.read(65536)
                if not data:
                    return None
                self._pending += [p.parse_server_message(f) for f in self._decoder.feed(data)]
        return self._pending.pop(0)

    async def next_of[M: p.ServerMessage](self, kind: type[M], timeout: float = 5.0) -> M:
        """Skip to the next message of `kind` (pushes, bundles and the like pass by)."""
        deadline = time.monotonic() + timeout
        while True:
            message = await self.next_message(max(0.01, deadline - time.monotonic()))
            assert message is not None, f"the stream closed before a {kind.__name__}"
            if isinstance(message, kind):
                return message

    async def still_answers(self) -> bool:
        """Whether the stream is alive: a heartbeat gets its echo."""
        self.send(p.Heartbeat())
        try:
            await self.next_of(p.Heartbeat)
        except (AssertionError, TimeoutError, ConnectionError):
            return False
        return True

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the controller closes the stream within `timeout` (messages before
        the close pass by)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()
