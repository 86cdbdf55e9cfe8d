"""Port forwards between the host's namespace and network namespaces, as the node agent
runs them: bytes flow both ways (1 MiB each), a half-close travels, an unreachable
upstream closes the client, and a stopped forward leaves nothing listening.

The lab has a "node" namespace (198.18.0.1, as `mycelium-node` holds the bridge) wired
to a "pod" namespace (198.18.0.2). Servers and clients are blocking sockets on threads
that entered their namespace; each server reads its client's whole request up to the
FIN, and only then answers: a request that arrives only after a half-close, and an
answer the client reads after shutting its write side, prove the half-close travels.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest
from tests.support.netns import Namespace, NetnsLab, system_lab
from tests.support.polling import eventually

from mycelium.net.netns import InNamespace
from mycelium.runtime.port_forward import PortForward, PortForwardError

pytestmark = pytest.mark.system

NODE_ADDRESS = "198.18.0.1"
POD_ADDRESS = "198.18.0.2"
PAYLOAD_BYTES = 1024 * 1024
SOCKET_TIMEOUT_S = 20.0


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    yield from system_lab()


@pytest.fixture
def wired(lab: NetnsLab) -> tuple[Namespace, Namespace]:
    node, pod = lab.namespace("node"), lab.namespace("pod")
    lab.link(node, NODE_ADDRESS, pod, POD_ADDRESS)
    return node, pod


@pytest.fixture
def host() -> Iterator[InNamespace]:
    with InNamespace() as in_host:
        yield in_host


@pytest.fixture
def in_node(wired: tuple[Namespace, Namespace]) -> Iterator[InNamespace]:
    with InNamespace(wired[0].name) as in_ns:
        yield in_ns


def payload(seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest()
    return (block * (PAYLOAD_BYTES // len(block) + 1))[:PAYLOAD_BYTES]


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def listen(address: tuple[str, int]) -> socket.socket:
    return socket.create_server(address)


def answer_after_eof(listener: socket.socket) -> bytes:
    """Accept one client, read its request up to its FIN, then answer and close; the
    request received."""
    listener.settimeout(SOCKET_TIMEOUT_S)
    conn, _ = listener.accept()
    with conn, listener:
        conn.settimeout(SOCKET_TIMEOUT_S)
        request = read_to_eof(conn)
        conn.sendall(payload(b"answer"))
    return request


def ask(address: tuple[str, int]) -> bytes:
    """Send a request, shut the write side, read the answer to its end."""
    with socket.create_connection(address, timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(payload(b"request"))
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def serve_in(ns: Namespace | None, address: tuple[str, int]) -> tuple[Future[bytes], int]:
    """A one-shot `answer_after_eof` server in `ns` (None: the host); its port."""
    if ns is None:
        listener = listen(address)
        future: Future[bytes] = Future()

        def run() -> None:
            try:
                future.set_result(answer_after_eof(listener))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()
    else:
        listener = ns.call(listen, address)
        future = ns.start(answer_after_eof, listener)
    return future, listener.getsockname()[1]


async def in_thread[T](ns: Namespace | None, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` run on a thread (inside `ns`), without blocking the test's loop."""
    if ns is None:
        return await asyncio.to_thread(fn, *args)
    return await asyncio.wrap_future(ns.start(fn, *args))


async def test_host_loopback_reaches_a_server_in_a_namespace_and_back(
    wired: tuple[Namespace, Namespace], host: InNamespace, in_node: InNamespace
) -> None:
    _, pod = wired
    served, port = serve_in(pod, (POD_ADDRESS, 0))

    async with PortForward(
        ("127.0.0.1", 0), (POD_ADDRESS, port), listen_in=host, connect_in=in_node
    ) as forward:
        answer = await in_thread(None, ask, forward.address)

        assert answer == payload(b"answer")
        assert served.result(timeout=SOCKET_TIMEOUT_S) == payload(b"request")
        await eventually(lambda: forward.connections == 0, what="the relay to close")


async def test_a_namespace_reaches_a_server_on_the_host_and_back(
    wired: tuple[Namespace, Namespace], host: InNamespace, in_node: InNamespace
) -> None:
    _, pod = wired
    served, port = serve_in(None, ("127.0.0.1", 0))

    async with PortForward(
        (NODE_ADDRESS, 0), ("127.0.0.1", port), listen_in=in_node, connect_in=host
    ) as forward:
        # A pod dials the node's address, as a sidecar dials the controller.
        answer = await in_thread(pod, ask, forward.address)

        assert answer == payload(b"answer")
        assert served.result(timeout=SOCKET_TIMEOUT_S) == payload(b"request")


async def test_the_half_closed_side_still_receives_while_the_other_talks(
    wired: tuple[Namespace, Namespace], host: InNamespace, in_node: InNamespace
) -> None:
    # The server answers in two parts with a pause for the client's reaction between
    # them: after the client shut its write side, bytes still flow back to it.
    _, pod = wired

    def two_part_answer(listener: socket.socket) -> None:
        listener.settimeout(SOCKET_TIMEOUT_S)
        conn, _ = listener.accept()
        with conn, listener:
            conn.settimeout(SOCKET_TIMEOUT_S)
            assert read_to_eof(conn) == b"question"
            conn.sendall(b"first;")
            assert conn.recv(1) == b""  # still half-closed: no RST, no more data
            conn.sendall(b"second")

    listener = pod.call(listen, (POD_ADDRESS, 0))
    served = pod.start(two_part_answer, listener)

    def client(address: tuple[str, int]) -> bytes:
        with socket.create_connection(address, timeout=SOCKET_TIMEOUT_S) as sock:
            sock.sendall(b"question")
            sock.shutdown(socket.SHUT_WR)
            return read_to_eof(sock)

    async with PortForward(
        ("127.0.0.1", 0),
        (POD_ADDRESS, listener.getsockname()[1]),
        listen_in=host,
        connect_in=in_node,
    ) as forward:
        assert await in_thread(None, client, forward.address) == b"first;second"
        served.result(timeout=SOCKET_TIMEOUT_S)


async def test_an_upstream_that_refuses_closes_the_client(
    wired: tuple[Namespace, Namespace], host: InNamespace, in_node: InNamespace
) -> None:
    free = wired[1].call(listen, (POD_ADDRESS, 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now

    def connect_and_wait_for_the_end(address: tuple[str, int]) -> bool:
        with socket.create_connection(address, timeout=SOCKET_TIMEOUT_S) as sock:
            sock.sendall(b"anyone?")
            return ended(sock)

    async with PortForward(
        ("127.0.0.1", 0), (POD_ADDRESS, port), listen_in=host, connect_in=in_node
    ) as forward:
        assert await in_thread(None, connect_and_wait_for_the_end, forward.address)
        await eventually(lambda: forward.connections == 0, what="the client to be dropped")


def ended(sock: socket.socket) -> bool:
    """Whether the connection ends (EOF, or a reset: the kernel resets a connection
    closed with unread bytes) before any byte arrives."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


async def test_after_stop_nothing_listens_and_open_connections_are_closed(
    wired: tuple[Namespace, Namespace], host: InNamespace, in_node: InNamespace
) -> None:
    _, pod = wired
    listener = pod.call(listen, (POD_ADDRESS, 0))
    listener.settimeout(SOCKET_TIMEOUT_S)
    accepted = pod.start(lambda: listener.accept()[0])
    to_pod = PortForward(
        ("127.0.0.1", 0),
        (POD_ADDRESS, listener.getsockname()[1]),
        listen_in=host,
        connect_in=in_node,
    )
    to_host = PortForward((NODE_ADDRESS, 0), ("127.0.0.1", 9), listen_in=in_node, connect_in=host)
    await to_pod.start()
    await to_host.start()
    held = socket.create_connection(to_pod.address, timeout=SOCKET_TIMEOUT_S)
    try:
        with await asyncio.wrap_future(accepted):
            await eventually(lambda: to_pod.connections == 1, what="the relay to be up")

            await to_pod.stop()
            await to_host.stop()

            assert to_pod.connections == 0
            assert await in_thread(None, ended, held)
    finally:
        held.close()
        listener.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(to_pod.address, timeout=SOCKET_TIMEOUT_S)
    with pytest.raises(ConnectionRefusedError):
        pod.call(socket.create_connection, to_host.address, SOCKET_TIMEOUT_S)


async def test_a_missing_namespace_is_an_error_at_start_that_says_what_to_check(
    host: InNamespace,
) -> None:
    # (InNamespace's own error: tests/system/net/test_netns_dial.py)
    with InNamespace("mycelium-no-such-namespace") as nowhere:
        forward = PortForward(
            ("127.0.0.1", 0), ("127.0.0.1", 9), listen_in=nowhere, connect_in=host
        )
        with pytest.raises(PortForwardError, match="ip netns list"):
            await forward.start()


async def test_a_port_in_use_is_an_error_at_start(host: InNamespace) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        forward = PortForward(
            taken.getsockname()[:2], ("127.0.0.1", 9), listen_in=host, connect_in=host
        )
        with pytest.raises(PortForwardError, match="cannot listen"):
            await forward.start()
