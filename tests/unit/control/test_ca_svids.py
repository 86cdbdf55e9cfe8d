"""The CA signs X.509-SVIDs for the identity a credential vouched for, and nothing else.

SVIDs are checked with independent code: `openssl verify` against the trust bundle, and
the SPIFFE project's own library for the SVID's shape and ID."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from spiffe import X509Svid

from mycelium.control.ca import CertificateAuthority, CsrRefused
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca", "cluster.local")


def test_an_svid_verifies_against_the_bundle_and_names_its_identity(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    request = new_key_and_request(REVIEWS)

    pem = ca.issue_svid(request.csr_pem, REVIEWS)

    (tmp_path / "svid.pem").write_bytes(pem)
    (tmp_path / "bundle.pem").write_bytes(ca.bundle_pem)
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem"), str(tmp_path / "svid.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    svid = X509Svid.parse(pem, request.key_pem())  # also checks the key matches
    assert str(svid.spiffe_id) == REVIEWS.uri
    cert = x509.load_pem_x509_certificate(pem)
    assert SpiffeId.from_certificate(cert) == REVIEWS
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=24) <= lifetime <= dt.timedelta(hours=24, minutes=2)


def test_a_csr_for_another_identity_is_refused(ca: CertificateAuthority) -> None:
    request = new_key_and_request(SpiffeId("cluster.local", "shop", "payments"))
    with pytest.raises(CsrRefused) as refused:
        ca.issue_svid(request.csr_pem, REVIEWS)
    assert refused.value.reason == "identity_mismatch"


def test_only_p256_keys_are_signed(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(CsrRefused) as refused:
        ca.issue_svid(csr.public_bytes(serialization.Encoding.PEM), REVIEWS)
    assert refused.value.reason == "bad_key"


def test_a_csr_with_a_broken_signature_is_refused(ca: CertificateAuthority) -> None:
    good = new_key_and_request(REVIEWS)
    other = ec.generate_private_key(ec.SECP256R1())
    # The CSR's public key swapped for another: the signature no longer matches.
    csr = x509.load_pem_x509_csr(good.csr_pem)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    old = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    start = bytes(der).index(old)
    der[start : start + len(old)] = new
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRefused, match="signature does not match") as refused:
        ca.issue_svid(tampered, REVIEWS)
    assert refused.value.reason == "bad_csr"


def test_an_identity_of_another_trust_domain_is_refused(ca: CertificateAuthority) -> None:
    elsewhere = SpiffeId("example.org", "shop", "reviews")
    request = new_key_and_request(elsewhere)
    with pytest.raises(CsrRefused) as refused:
        ca.issue_svid(request.csr_pem, elsewhere)
    assert refused.value.reason == "wrong_trust_domain"


def test_not_a_csr_at_all(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRefused, match="not a PEM certificate signing request"):
        ca.issue_svid(b"hello", REVIEWS)


def test_the_signing_key_is_private_on_disk(ca: CertificateAuthority, tmp_path: Path) -> None:
    assert (tmp_path / "ca" / "signing.key").stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in ca.bundle_pem
