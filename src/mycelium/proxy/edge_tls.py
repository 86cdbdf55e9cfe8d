"""TLS at a gateway's edge: the operator's own certificate, presented to clients
outside the mesh (an HTTPS listener that terminates). Not the mesh's identity: that
is `identity/tls.py`, whose in-memory chain loading this reuses."""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mycelium.errors import MeshError
from mycelium.net.tls_memory import load_certificate_chain

# What a gateway's TLS listener offers clients outside the mesh. Not h2: the proxy
# carries HTTP/2 only end to end, and the services behind a gateway are seldom HTTP/2
# servers; HTTP/1.1 reaches every one of them.
EDGE_ALPN = ["http/1.1"]


class CertificateFileError(MeshError):
    """A gateway listener's certificate or key file cannot be used; the message names it."""


def edge_server_context(certificate_file: str, key_file: str) -> ssl.SSLContext:
    """For a gateway listener facing clients outside the mesh: presents the operator's
    certificate chain and key (read from their files now), asks for no client
    certificate, and offers HTTP/1.1 (`EDGE_ALPN`). Raises `CertificateFileError` naming
    the file at fault."""
    certificate_pem = _read_pem(certificate_file, "certificate")
    try:
        x509.load_pem_x509_certificates(certificate_pem)
    except ValueError:
        raise CertificateFileError(
            f"certificate file {certificate_file} holds no PEM certificate"
        ) from None
    key_pem = _read_pem(key_file, "key")
    try:
        load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateFileError(
            f"key file {key_file} holds no unencrypted PEM private key"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(EDGE_ALPN)
    try:
        load_certificate_chain(context, certificate_pem, key_pem)
    except ssl.SSLError as exc:
        raise CertificateFileError(
            f"the key in {key_file} does not match the certificate in {certificate_file} "
            f"({exc.reason or exc})"
        ) from None
    return context


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise CertificateFileError(f"cannot read {what} file {path}: {exc.strerror}") from None
