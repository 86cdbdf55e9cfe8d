"""The controller's certificate authority.

At first start it creates a self-signed root (ECDSA P-256) under `<home>/ca/`, the key
written 0600 and never logged or served (the key stays on the controller's disk; several
controllers would share it through the store, encrypted — not built yet). The root signs
the controller's own serving certificate for the discovery port, and the workloads'
X.509-SVIDs (`CertificateAuthority.issue_svid`) for CSRs whose identity a join token
vouched for; proxies trust `<home>/ca/root.pem` (the trust bundle).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mycelium.errors import MeshError
from mycelium.identity.spiffe import SpiffeId, SpiffeIdError

ROOT_VALIDITY = dt.timedelta(days=3650)
# The serving certificate is re-issued at every controller start, so a short life is free.
SERVING_VALIDITY = dt.timedelta(days=7)
# Workload SVIDs (DESIGN.md: 24 h, renewed at half-life).
SVID_VALIDITY = dt.timedelta(hours=24)
MAX_SVID_VALIDITY = dt.timedelta(days=7)
MIN_SVID_VALIDITY = dt.timedelta(seconds=10)  # short lives are for tests and demos
# Clocks disagree a little: a certificate is valid from slightly before it was made.
BACKDATE = dt.timedelta(minutes=1)


class CsrRefused(MeshError):
    """A CSR the CA will not sign; `reason` is a word for counters and logs."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ServingFiles:
    certificate: Path
    key: Path
    trust_bundle: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_root(
    ca_dir: Path, trust_domain: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load the root from `ca_dir`, creating it on first start."""
    cert_path, key_path = ca_dir / "root.pem", ca_dir / "root.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mycelium"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mycelium root CA ({trust_domain})"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue_serving_certificate(ca_dir: Path, trust_domain: str, hosts: list[str]) -> ServingFiles:
    """A fresh certificate for the controller's TLS listeners, valid for `hosts`."""
    root, root_key = ensure_root(ca_dir, trust_domain)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"spiffe://{trust_domain}/ns/mycelium-system/sa/controller")
    ]
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mycelium controller")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + SERVING_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    files = ServingFiles(ca_dir / "controller.pem", ca_dir / "controller.key", ca_dir / "root.pem")
    _write_private(files.key, _key_pem(key))
    files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


class CertificateAuthority:
    """Signs X.509-SVIDs with the root under `ca_dir` (created at first use)."""

    def __init__(self, ca_dir: Path, trust_domain: str) -> None:
        self.trust_domain = trust_domain
        self.root, self._key = ensure_root(ca_dir, trust_domain)
        self.bundle_pem = self.root.public_bytes(serialization.Encoding.PEM)

    def issue_svid(
        self,
        csr_pem: bytes,
        identity: SpiffeId,
        validity: dt.timedelta = SVID_VALIDITY,
        now: dt.datetime | None = None,
    ) -> bytes:
        """The SVID (PEM) for the key in `csr_pem`, naming `identity` and nothing else.

        The identity comes from the caller (what a join token or a current SVID proves),
        never from the CSR: a CSR that asks for another identity is refused, not
        corrected. Raises `CsrRefused`."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CsrRefused(
                "bad_csr", "the request is not a PEM certificate signing request"
            ) from None
        if not csr.is_signature_valid:
            raise CsrRefused("bad_csr", "the CSR's signature does not match its public key")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise CsrRefused("bad_key", "SVID keys are ECDSA P-256; generate one of those")
        if identity.trust_domain != self.trust_domain:
            raise CsrRefused(
                "wrong_trust_domain",
                f"{identity} is outside this CA's trust domain {self.trust_domain!r}",
            )
        asked = _requested_ids(csr)
        if asked and asked != [identity.uri]:
            raise CsrRefused(
                "identity_mismatch",
                f"the CSR asks for {', '.join(asked)} but the credential is for {identity}",
            )
        if not MIN_SVID_VALIDITY <= validity <= MAX_SVID_VALIDITY:
            raise CsrRefused("bad_validity", f"an SVID lives 10 s to 7 days, not {validity}")
        now = now or dt.datetime.now(dt.UTC)
        not_after = min(now + validity, self.root.not_valid_after_utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.root.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                critical=True,  # the subject is empty, so the SAN carries the identity
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def verify_svid(self, certificate_pem: bytes, now: dt.datetime | None = None) -> SpiffeId:
        """The identity of an SVID this CA signed and that is valid `now`; `CsrRefused`
        (`untrusted`, `expired`) otherwise. Used to renew: a proxy proves who it is with
        the certificate it holds."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            raise CsrRefused("untrusted", "the current certificate is not PEM") from None
        try:
            certificate.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature):
            raise CsrRefused("untrusted", "the current certificate is not from this CA") from None
        now = now or dt.datetime.now(dt.UTC)
        if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
            raise CsrRefused("expired", "the current certificate is not valid now")
        try:
            return SpiffeId.from_certificate(certificate)
        except SpiffeIdError as exc:
            raise CsrRefused("untrusted", str(exc)) from None


def _requested_ids(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    for uri in uris:
        try:
            SpiffeId.parse(uri)
        except SpiffeIdError as exc:
            raise CsrRefused("identity_mismatch", str(exc)) from None
    other = [n for n in san.value if not isinstance(n, x509.UniformResourceIdentifier)]
    if other:
        raise CsrRefused("bad_csr", "an SVID names its workload by one URI SAN and nothing else")
    return uris
