"""Renewal: the current SVID says who, and the new CSR signed with its key proves the
caller holds it. Expired, foreign or unproven certificates renew nothing."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mycelium.control.ca import CertificateAuthority
from mycelium.control.join_tokens import JoinTokens
from mycelium.control.svids import IssuedSvid, SvidService
from mycelium.identity.csr import KeyAndRequest, new_key_and_request
from mycelium.identity.spiffe import SpiffeId

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")


@pytest.fixture
def service(tmp_path: Path) -> SvidService:
    ca = CertificateAuthority(tmp_path / "ca", "cluster.local")
    return SvidService(ca, JoinTokens(b"k" * 32, "cluster.local"))


def current(service: SvidService, **kw: object) -> tuple[bytes, KeyAndRequest]:
    request = new_key_and_request(REVIEWS)
    return service.ca.issue_svid(request.csr_pem, REVIEWS, **kw), request  # type: ignore[arg-type]


def proof_of(key: ec.EllipticCurvePrivateKey, csr_pem: bytes) -> str:
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    return base64.b64encode(key.sign(der, ec.ECDSA(hashes.SHA256()))).decode()


def test_the_holder_of_an_svid_renews_it_for_the_same_identity(service: SvidService) -> None:
    pem, held = current(service)
    fresh = new_key_and_request(REVIEWS)

    answer = service.renew(fresh.csr_pem, pem, proof_of(held.key, fresh.csr_pem), "test")

    assert isinstance(answer, IssuedSvid)
    assert answer.identity == REVIEWS
    assert answer.certificate != pem
    assert service.renewed == 1


def test_a_certificate_without_its_key_renews_nothing(service: SvidService) -> None:
    pem, _ = current(service)
    fresh = new_key_and_request(REVIEWS)
    thief = ec.generate_private_key(ec.SECP256R1())
    stolen = service.renew(fresh.csr_pem, pem, proof_of(thief, fresh.csr_pem), "test")
    assert stolen[0] == "bad_proof"  # type: ignore[index]
    assert service.renew(fresh.csr_pem, pem, "not base64!", "test")[0] == "bad_proof"  # type: ignore[index]


def test_an_expired_certificate_renews_nothing(service: SvidService) -> None:
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    pem, held = current(service, validity=dt.timedelta(hours=24), now=long_ago)
    fresh = new_key_and_request(REVIEWS)
    answer = service.renew(fresh.csr_pem, pem, proof_of(held.key, fresh.csr_pem), "test")
    assert answer[0] == "expired"  # type: ignore[index]


def test_a_certificate_from_another_ca_renews_nothing(service: SvidService, tmp_path: Path) -> None:
    other = CertificateAuthority(tmp_path / "other", "cluster.local")
    held = new_key_and_request(REVIEWS)
    pem = other.issue_svid(held.csr_pem, REVIEWS)
    fresh = new_key_and_request(REVIEWS)
    answer = service.renew(fresh.csr_pem, pem, proof_of(held.key, fresh.csr_pem), "test")
    assert answer[0] == "untrusted"  # type: ignore[index]
    assert service.refused["untrusted"] == 1
