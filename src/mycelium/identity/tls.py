"""TLS contexts from an SVID, and the peer's SPIFFE ID from a finished handshake.

Both sides of proxy-to-proxy mTLS use TLS 1.3 only, present their SVID, require the
peer's, and verify it against the trust bundle. SVIDs carry no DNS name, so hostname
checking is off and the peer is judged by its SPIFFE ID instead (`peer_identity`),
which policy and telemetry then use. `spiffe_peer` is that judgement in the shape the
memory-BIO sessions of `net.tls_session` call once their handshake is done.

The private key never touches a disk: `ssl` only loads certificate chains from files,
so the key is handed over through an anonymous in-memory file (memfd) that is closed
as soon as it is loaded.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass

from cryptography import x509

from mycelium.errors import MeshError
from mycelium.identity.alpn import MESH_ALPN, MESH_PEER_ALPN
from mycelium.identity.spiffe import SpiffeId, SpiffeIdError
from mycelium.net.errors import TlsRefused
from mycelium.net.tls_memory import load_certificate_chain
from mycelium.net.tls_session import PeerCheck


class PeerIdentityError(MeshError):
    """The peer presented no SVID, or one that names no mesh identity."""


@dataclass(frozen=True, slots=True)
class Svid:
    """A workload's certificate, its key and the trust bundle to check peers with."""

    certificate_pem: bytes
    key_pem: bytes
    bundle_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @property
    def identity(self) -> SpiffeId:
        return SpiffeId.from_certificate(self.certificate)

    @property
    def expires_at(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def issuer_key_id(self) -> str | None:
        """The key id (hex) of the CA certificate that signed ours, if it says."""
        try:
            aki = self.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        except x509.ExtensionNotFound:
            return None
        found = aki.value.key_identifier
        return found.hex() if found else None

    def with_bundle(self, bundle_pem: bytes) -> Svid:
        return Svid(self.certificate_pem, self.key_pem, bundle_pem)


def _load_chain(context: ssl.SSLContext, svid: Svid) -> None:
    load_certificate_chain(context, svid.certificate_pem, svid.key_pem)


def _context(purpose: ssl.Purpose, svid: Svid, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # SVIDs name a workload, not a host: see peer_identity
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=svid.bundle_pem.decode())
    _load_chain(context, svid)
    context.set_alpn_protocols(alpn)
    return context


def server_context(svid: Svid) -> ssl.SSLContext:
    """For an inbound listener: presents `svid`, requires and verifies the client's.
    It prefers the TCP relays' protocol (the server's order decides), which only they
    offer."""
    return _context(ssl.Purpose.CLIENT_AUTH, svid, [MESH_PEER_ALPN, MESH_ALPN])


def client_context(svid: Svid, *, introduces: bool = False) -> ssl.SSLContext:
    """For connections to other proxies: presents `svid`, verifies the server's; with
    `introduces`, a TCP relay's, which sends its introduction first."""
    alpn = [MESH_PEER_ALPN, MESH_ALPN] if introduces else [MESH_ALPN]
    return _context(ssl.Purpose.SERVER_AUTH, svid, alpn)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId:
    """The SPIFFE ID of the peer of a completed, verified handshake."""
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerIdentityError("the peer presented no certificate")
    try:
        return SpiffeId.from_certificate(x509.load_der_x509_certificate(der))
    except SpiffeIdError as exc:
        raise PeerIdentityError(f"the peer's certificate names no mesh identity: {exc}") from None


def spiffe_peer(expected: str = "") -> PeerCheck:
    """A `TlsSession`'s peer check for the mesh: the peer must present an SVID, and be
    `expected` (a SPIFFE ID URI) when one is given; the session's `peer` is its ID."""

    def check(ssl_object: ssl.SSLObject) -> SpiffeId:
        try:
            peer = peer_identity(ssl_object)
        except PeerIdentityError as exc:
            raise TlsRefused("untrusted_peer", str(exc)) from None
        if expected and peer.uri != expected:
            raise TlsRefused("wrong_identity", f"the peer is {peer}, not the expected {expected}")
        return peer

    return check
