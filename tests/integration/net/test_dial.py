"""The dialer over loopback: an address or a name, from a chosen source address, with
asyncio's TLS on top for the pools; a refusal is the OS's error. (Marks and network
namespaces need root: tests/system/net/test_netns_dial.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mycelium.control.ca import CertificateAuthority
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid, client_context, peer_identity, server_context
from mycelium.net.dial import PLAIN, Dialer

LOCALHOST = "127.0.0.1"
PROMPTLY = 5.0  # seconds
REVIEWS = SpiffeId("cluster.local", "shop", "reviews")
PRODUCTPAGE = SpiffeId("cluster.local", "shop", "productpage")


@contextlib.asynccontextmanager
async def server(**kwargs: object) -> AsyncIterator[tuple[int, asyncio.Queue[str]]]:
    """A loopback server that answers each client with its peer's address; yields its
    port and a queue of the client addresses it saw."""
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        seen.put_nowait(peer[0])
        writer.write(f"hello {peer[0]}".encode())
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(greet, LOCALHOST, 0, **kwargs)  # type: ignore[arg-type]
    try:
        yield listener.sockets[0].getsockname()[1], seen
    finally:
        listener.close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


async def test_an_address_is_dialled_without_a_resolver() -> None:
    async with server() as (port, _):
        sock = await asyncio.wait_for(PLAIN.dial(LOCALHOST, port), PROMPTLY)
        with sock:
            assert not sock.getblocking()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # no Nagle delay
            assert sock.getpeername() == (LOCALHOST, port)
    assert await PLAIN.resolve("198.18.0.1", 80) == [(socket.AF_INET, ("198.18.0.1", 80))]
    assert await PLAIN.resolve("::1", 80) == [(socket.AF_INET6, ("::1", 80, 0, 0))]


async def test_a_name_is_resolved_and_its_addresses_tried_in_turn() -> None:
    async with server() as (port, _):
        sock = await asyncio.wait_for(PLAIN.dial("localhost", port), PROMPTLY)
        sock.close()


async def test_the_source_address_is_the_one_asked_for() -> None:
    # all of 127.0.0.0/8 is the loopback's: a second address needs no setup
    async with server() as (port, seen):
        transport, _ = await Dialer(source="127.0.0.2").connect(asyncio.Protocol, LOCALHOST, port)
        transport.close()
        assert await asyncio.wait_for(seen.get(), PROMPTLY) == "127.0.0.2"


async def test_a_refusal_is_the_os_error() -> None:
    with pytest.raises(ConnectionRefusedError):
        await PLAIN.dial(LOCALHOST, unused_port())


async def test_connect_speaks_tls_with_the_context_given(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", "cluster.local")

    def svid(identity: SpiffeId) -> Svid:
        request = new_key_and_request(identity)
        return Svid(ca.issue_svid(request.csr_pem, identity), request.key_pem(), ca.bundle_pem)

    async with server(ssl=server_context(svid(REVIEWS))) as (port, _):
        reader = asyncio.StreamReader()
        transport, _ = await PLAIN.connect(
            lambda: asyncio.StreamReaderProtocol(reader),
            LOCALHOST,
            port,
            tls=client_context(svid(PRODUCTPAGE)),
        )
        try:
            assert peer_identity(transport.get_extra_info("ssl_object")) == REVIEWS
            assert await asyncio.wait_for(reader.read(), PROMPTLY) == b"hello 127.0.0.1"
        finally:
            transport.close()
