"""Generated messages against a live discovery stream, over a real TLS socket.

Hypothesis writes the frames: JSON objects tagged with every message type a proxy can
send, holding the fields those messages have (and others) with values of any JSON
shape, and raw bytes. Whatever a frame holds, the controller accepts it or refuses it
with a reason, and the stream survives: a heartbeat after the frames is answered. A
well-behaved proxy on the same controller still gets a pushed change within a second
when hypothesis is done.

Hypothesis drives a synchronous test, so the controller runs in an event loop of its
own thread and the test speaks to it with a blocking socket.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.controller import Mesh, running_mesh
from tests.support.discovery_peer import WatchedProxy, watched_proxy

from mycelium.discovery import protocol as p

TAGS = sorted(p.MAX_MESSAGE_BYTES)
FIELDS = sorted(
    {name for kind in p.ClientMessage.__value__.__args__ for name in kind.__struct_fields__}
    | set(p.NodeInfo.__struct_fields__)
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=12,
)
TAGGED = st.builds(
    lambda tag, fields: msgspec.json.encode({"type": tag, **fields}),
    st.sampled_from(TAGS),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), JSON, max_size=5),
)
PAYLOADS = st.lists(TAGGED | st.binary(max_size=200), min_size=1, max_size=8)


class ControllerThread:
    """A controller and a watched proxy, living in an event loop on another thread."""

    def __init__(self, home: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stack = AsyncExitStack()
        self._home = home
        self.mesh: Mesh
        self.watched: WatchedProxy

    def run[T](self, coroutine: Awaitable[T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)  # type: ignore[arg-type]
        return future.result(timeout)

    def __enter__(self) -> ControllerThread:
        self._thread.start()

        async def start() -> None:
            # Production's heartbeat: the peer speaks only between examples, and a
            # pause of hypothesis' must not look like a proxy gone silent.
            self.mesh = await self._stack.enter_async_context(
                running_mesh(self._home, heartbeat_seconds=5.0, lease_ttl_seconds=15.0)
            )
            self.watched = await watched_proxy(self.mesh)

        self.run(start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class BlockingPeer:
    """An authenticated (anonymous) stream, spoken to with a blocking TLS socket."""

    def __init__(self, port: int, ca: Path, node_id: str) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        self.decoder = p.FrameDecoder()
        self.pending: list[p.ServerMessage] = []
        self.sock.sendall(p.encode(p.Hello(node=p.NodeInfo(id=node_id))) + p.encode(p.Resume()))
        self.next_of(p.Welcome)

    def send_payloads(self, payloads: list[bytes]) -> None:
        self.sock.settimeout(30)  # a read may have left it short; a send waits out throttling
        self.sock.sendall(b"".join(len(x).to_bytes(4, "big") + x for x in payloads))

    def next_of(self, kind: type[Any]) -> Any:
        deadline = time.monotonic() + 10
        while True:
            while self.pending:
                message = self.pending.pop(0)
                if isinstance(message, kind):
                    return message
                assert not isinstance(message, p.Refusal), message
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "the controller closed the stream"
            self.pending += [p.parse_server_message(f) for f in self.decoder.feed(data)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerThread]:
    with ControllerThread(tmp_path_factory.mktemp("generated") / "home") as running:
        yield running


@pytest.fixture(scope="module")
def peer(controller: ControllerThread) -> Iterator[BlockingPeer]:
    mesh = controller.mesh
    peer = BlockingPeer(mesh.controller.discovery_port, mesh.home / "ca" / "root.pem", "gen-0")
    yield peer
    peer.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payloads=PAYLOADS)
def test_generated_frames_are_accepted_or_refused_and_the_stream_survives(
    controller: ControllerThread, peer: BlockingPeer, payloads: list[bytes]
) -> None:
    peer.send_payloads([*payloads, msgspec.json.encode(p.Heartbeat())])
    peer.next_of(p.Heartbeat)


def test_after_the_generated_frames_a_neighbour_is_still_served(
    controller: ControllerThread, peer: BlockingPeer
) -> None:
    # one refusal at least, when run on its own
    peer.send_payloads([b"{nope", msgspec.json.encode(p.Heartbeat())])
    peer.next_of(p.Heartbeat)
    latency = controller.run(controller.watched.push_latency())
    assert latency < 1.0
    discovery = controller.mesh.controller.discovery
    assert "gen-0" in discovery.sessions
    assert discovery.refusals.counts["malformed"] > 0
