"""The sans-IO TLS session: two of them talk through memory, with SVIDs from the mesh
CA. The handshake names each peer; data flows both ways; the first bytes may already
have been read by protocol detection; refusals say why."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mycelium.control.ca import CertificateAuthority
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid, client_context, server_context, spiffe_peer
from mycelium.net.errors import TlsRefused
from mycelium.net.tls_session import TlsSession

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")
PRODUCTPAGE = SpiffeId("cluster.local", "shop", "productpage")


def svid(ca: CertificateAuthority, identity: SpiffeId, **kw: object) -> Svid:
    request = new_key_and_request(identity)
    return Svid(ca.issue_svid(request.csr_pem, identity, **kw), request.key_pem(), ca.bundle_pem)  # type: ignore[arg-type]


def pump(client: TlsSession, server: TlsSession) -> tuple[bytes, bytes]:
    """Move bytes both ways until neither side has anything to say; return what each
    side received as plaintext."""
    to_client, to_server = b"", b""
    for _ in range(20):
        c_out, s_out = client.outgoing(), server.outgoing()
        if not c_out and not s_out:
            break
        if c_out:
            to_server += server.receive(c_out)
        if s_out:
            to_client += client.receive(s_out)
    return to_client, to_server


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca", "cluster.local")


def test_two_sessions_shake_hands_and_talk(ca: CertificateAuthority) -> None:
    client = TlsSession(
        client_context(svid(ca, PRODUCTPAGE)), server_side=False, verify_peer=spiffe_peer()
    )
    server = TlsSession(
        server_context(svid(ca, REVIEWS)), server_side=True, verify_peer=spiffe_peer()
    )
    client.send(b"GET /stars HTTP/1.1\r\nHost: ratings\r\n\r\n")  # before the handshake

    to_client, to_server = pump(client, server)
    server.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    more_to_client, _ = pump(client, server)

    assert client.peer == REVIEWS
    assert server.peer == PRODUCTPAGE
    assert to_server == b"GET /stars HTTP/1.1\r\nHost: ratings\r\n\r\n"
    assert to_client + more_to_client == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

    client.close()
    pump(client, server)
    assert server.closed_by_peer


def test_the_first_bytes_may_arrive_in_pieces(ca: CertificateAuthority) -> None:
    client = TlsSession(
        client_context(svid(ca, PRODUCTPAGE)), server_side=False, verify_peer=spiffe_peer()
    )
    server = TlsSession(
        server_context(svid(ca, REVIEWS)), server_side=True, verify_peer=spiffe_peer()
    )
    hello = client.outgoing()
    # what detection read first, then the rest
    assert server.receive(hello[:5]) == b""
    assert server.receive(hello[5:]) == b""
    client.receive(server.outgoing())
    pump(client, server)
    assert server.peer == PRODUCTPAGE


def test_plaintext_to_a_tls_session_is_refused_as_not_tls(ca: CertificateAuthority) -> None:
    server = TlsSession(
        server_context(svid(ca, REVIEWS)), server_side=True, verify_peer=spiffe_peer()
    )
    with pytest.raises(TlsRefused) as refused:
        server.receive(b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n")
    assert refused.value.reason == "not_tls"


@pytest.mark.parametrize("problem", ["foreign_ca", "expired"])
def test_an_untrusted_client_is_refused(
    ca: CertificateAuthority, tmp_path: Path, problem: str
) -> None:
    if problem == "foreign_ca":
        other = svid(CertificateAuthority(tmp_path / "other", "cluster.local"), PRODUCTPAGE)
        bad = Svid(other.certificate_pem, other.key_pem, ca.bundle_pem)
    else:
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        bad = svid(ca, PRODUCTPAGE, validity=dt.timedelta(hours=24), now=long_ago)
    client = TlsSession(client_context(bad), server_side=False, verify_peer=spiffe_peer())
    server = TlsSession(
        server_context(svid(ca, REVIEWS)), server_side=True, verify_peer=spiffe_peer()
    )
    with pytest.raises(TlsRefused) as refused:
        pump(client, server)
    assert refused.value.reason == "untrusted_peer"
    assert server.peer is None


def test_a_peer_that_is_not_the_expected_identity_is_refused(ca: CertificateAuthority) -> None:
    client = TlsSession(
        client_context(svid(ca, PRODUCTPAGE)),
        server_side=False,
        verify_peer=spiffe_peer(expected=PRODUCTPAGE.uri),  # but the server is reviews
    )
    server = TlsSession(server_context(svid(ca, REVIEWS)), server_side=True)
    client.send(b"held until the peer is known")
    with pytest.raises(TlsRefused) as refused:
        pump(client, server)
    assert refused.value.reason == "wrong_identity"
    assert not client.handshake_done  # so the held plaintext never left


def test_without_a_peer_check_the_session_names_no_peer(ca: CertificateAuthority) -> None:
    # A gateway's edge: clients from outside the mesh are not asked who they are.
    client = TlsSession(client_context(svid(ca, PRODUCTPAGE)), server_side=False)
    server = TlsSession(server_context(svid(ca, REVIEWS)), server_side=True)
    pump(client, server)
    assert client.handshake_done
    assert server.handshake_done
    assert (client.peer, server.peer) == (None, None)
