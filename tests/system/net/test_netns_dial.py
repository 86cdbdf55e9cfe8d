"""The dialer in other network namespaces, and its mark, as root.

The lab has two namespaces joined by a veth wire (198.18.0.1 in "near", 198.18.0.2 in
"far"); the host has no route to either. A server in "far" answers each client with
the address it came from: a dialer whose sockets are made in "near" reaches it from
the host's own event loop, from the source address it was given, and resolves names
on "near"'s thread. A socket dialled with a mark carries it (SO_MARK).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from tests.support.netns import Namespace, system_lab

from mycelium.net.dial import SO_MARK, Dialer
from mycelium.net.errors import NamespaceError
from mycelium.net.netns import InNamespace

pytestmark = pytest.mark.system

NEAR_ADDRESS = "198.18.0.1"
FAR_ADDRESS = "198.18.0.2"
SECOND_NEAR_ADDRESS = "198.18.0.5"
MARK = 0x539
SOCKET_TIMEOUT_S = 20.0


@pytest.fixture
def lab() -> Iterator[tuple[Namespace, Namespace, InNamespace]]:
    """The two namespaces, wired, and a thread inside "near" for the dialer."""
    for netns_lab in system_lab():
        near, far = netns_lab.namespace("near"), netns_lab.namespace("far")
        netns_lab.link(near, NEAR_ADDRESS, far, FAR_ADDRESS)
        with InNamespace(near.name) as in_near:
            yield near, far, in_near


def greeting_server(far: Namespace) -> int:
    """A server in `far` that answers one client with the client's address; its port."""
    listener = far.call(socket.create_server, (FAR_ADDRESS, 0))

    def answer_once() -> None:
        listener.settimeout(SOCKET_TIMEOUT_S)
        with listener:
            conn, peer = listener.accept()
            with conn:
                conn.sendall(peer[0].encode())

    far.start(answer_once)
    return int(listener.getsockname()[1])


async def read_answer(dialer: Dialer, host: str, port: int) -> bytes:
    reader = asyncio.StreamReader()
    transport, _ = await dialer.connect(lambda: asyncio.StreamReaderProtocol(reader), host, port)
    try:
        return await asyncio.wait_for(reader.read(), SOCKET_TIMEOUT_S)
    finally:
        transport.close()


async def test_a_dialer_in_a_namespace_reaches_what_only_that_namespace_can(
    lab: tuple[Namespace, Namespace, InNamespace],
) -> None:
    _, far, in_near = lab
    port = greeting_server(far)
    # (Never dialled from the host's own namespace: nothing may leave through its
    # real interfaces, DESIGN.md "Network safety rule".)
    assert await read_answer(Dialer(netns=in_near), FAR_ADDRESS, port) == NEAR_ADDRESS.encode()


async def test_a_dialer_in_a_namespace_connects_from_its_source_address(
    lab: tuple[Namespace, Namespace, InNamespace],
) -> None:
    near, far, in_near = lab
    near.run("ip", "address", "add", f"{SECOND_NEAR_ADDRESS}/32", "dev", "lo")
    far.run("ip", "route", "add", f"{SECOND_NEAR_ADDRESS}/32", "via", NEAR_ADDRESS)
    port = greeting_server(far)

    dialer = Dialer(netns=in_near, source=SECOND_NEAR_ADDRESS)
    assert await read_answer(dialer, FAR_ADDRESS, port) == SECOND_NEAR_ADDRESS.encode()


async def test_names_resolve_inside_the_namespace_too(
    lab: tuple[Namespace, Namespace, InNamespace],
) -> None:
    _, far, in_near = lab
    port = greeting_server(far)
    # "localhost" is in /etc/hosts for every namespace; its loopback is "near"'s own
    resolved = await Dialer(netns=in_near).resolve("localhost", port)
    assert (socket.AF_INET, ("127.0.0.1", port)) in resolved


async def test_a_marked_socket_carries_its_mark() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sock = await asyncio.wait_for(
            Dialer(mark=MARK).dial("127.0.0.1", listener.getsockname()[1]), SOCKET_TIMEOUT_S
        )
        with sock:
            assert sock.getsockopt(socket.SOL_SOCKET, SO_MARK) == MARK


async def test_a_missing_namespace_is_an_error_that_says_what_to_check() -> None:
    with InNamespace("mycelium-no-such-namespace") as nowhere:
        with pytest.raises(NamespaceError, match="ip netns list"):
            await nowhere.call(socket.socket)
        with pytest.raises(NamespaceError, match="ip netns list"):
            await Dialer(netns=nowhere).dial("198.18.0.2", 9)
