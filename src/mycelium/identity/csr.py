"""The proxy's side of getting an SVID: a key made here, and a CSR for one identity.

The private key is generated in the proxy's process and never leaves it; only the CSR
(public key, requested SPIFFE ID, signed with the key as proof of possession) goes to
the controller.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mycelium.identity.spiffe import SpiffeId


@dataclass(frozen=True, slots=True)
class KeyAndRequest:
    key: ec.EllipticCurvePrivateKey
    csr_pem: bytes

    def key_pem(self) -> bytes:
        """The key, PEM, unencrypted: for the proxy's own TLS context, never to send."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_key_and_request(identity: SpiffeId) -> KeyAndRequest:
    """A fresh ECDSA P-256 key and a CSR asking for `identity` (its URI SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyAndRequest(key, csr.public_bytes(serialization.Encoding.PEM))
