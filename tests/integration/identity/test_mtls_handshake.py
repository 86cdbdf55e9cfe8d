"""mTLS between two workloads with SVIDs from the mesh CA, over real loopback sockets:
each side learns the other's SPIFFE ID; a certificate from a foreign CA, an expired
certificate, no certificate, or no TLS at all is refused by the server."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mycelium.control.ca import CertificateAuthority
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid, client_context, peer_identity, server_context

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")
PRODUCTPAGE = SpiffeId("cluster.local", "shop", "productpage")


def svid_from(
    ca: CertificateAuthority,
    identity: SpiffeId,
    validity: dt.timedelta = dt.timedelta(hours=24),
    now: dt.datetime | None = None,
) -> Svid:
    request = new_key_and_request(identity)
    pem = ca.issue_svid(request.csr_pem, identity, validity, now)
    return Svid(pem, request.key_pem(), ca.bundle_pem)


@dataclass
class Server:
    """A TLS echo server that records who connected, or how the handshake failed."""

    context: ssl.SSLContext
    peers: list[SpiffeId] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(peer_identity(writer.get_extra_info("ssl_object")))
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca", "cluster.local")


async def exchange(port: int, context: ssl.SSLContext) -> tuple[bytes, SpiffeId, str]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context), 5
    )
    try:
        writer.write(b"marker-7f3a\n")
        answer = await asyncio.wait_for(reader.readline(), 5)
        ssl_object = writer.get_extra_info("ssl_object")
        return answer, peer_identity(ssl_object), ssl_object.version()
    finally:
        writer.close()


async def test_each_side_learns_the_others_spiffe_id(ca: CertificateAuthority) -> None:
    server = await Server(server_context(svid_from(ca, REVIEWS))).start()
    try:
        answer, server_id, version = await exchange(
            server.port, client_context(svid_from(ca, PRODUCTPAGE))
        )
    finally:
        await server.stop()
    assert answer == b"marker-7f3a\n"
    assert server_id == REVIEWS
    assert server.peers == [PRODUCTPAGE]
    assert version == "TLSv1.3"


async def refused(port: int, context: ssl.SSLContext | None) -> bool:
    """Whether the server refused this client: no echo comes back."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context), 5
        )
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        writer.write(b"marker-7f3a\n")
        answer = await asyncio.wait_for(reader.readline(), 5)
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        writer.close()
    return answer != b"marker-7f3a\n"


async def test_a_certificate_from_a_foreign_ca_is_refused(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    foreign = CertificateAuthority(tmp_path / "foreign-ca", "cluster.local")
    impostor = svid_from(foreign, PRODUCTPAGE)
    # The impostor trusts our CA, so only the server's check can stop it.
    context = client_context(Svid(impostor.certificate_pem, impostor.key_pem, ca.bundle_pem))
    server = await Server(server_context(svid_from(ca, REVIEWS))).start()
    try:
        assert await refused(server.port, context)
    finally:
        await server.stop()
    assert server.peers == []


async def test_an_expired_certificate_is_refused(ca: CertificateAuthority) -> None:
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    expired = svid_from(ca, PRODUCTPAGE, dt.timedelta(hours=24), now=two_days_ago)
    server = await Server(server_context(svid_from(ca, REVIEWS))).start()
    try:
        assert await refused(server.port, client_context(expired))
    finally:
        await server.stop()
    assert server.peers == []


async def test_no_certificate_or_no_tls_is_refused(ca: CertificateAuthority) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=ca.bundle_pem.decode())
    server = await Server(server_context(svid_from(ca, REVIEWS))).start()
    try:
        assert await refused(server.port, anonymous)
        assert await refused(server.port, None)  # plaintext
    finally:
        await server.stop()
    assert server.peers == []


async def test_a_server_from_a_foreign_ca_is_refused_by_the_client(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    foreign = CertificateAuthority(tmp_path / "foreign-ca", "cluster.local")
    fake = svid_from(foreign, REVIEWS)
    server = await Server(
        server_context(Svid(fake.certificate_pem, fake.key_pem, ca.bundle_pem))
    ).start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            await exchange(server.port, client_context(svid_from(ca, PRODUCTPAGE)))
    finally:
        await server.stop()
