"""The controller's certificate authority: signs X.509-SVIDs and the controller's own
serving certificate with the signing certificate of `<home>/ca/` (see ca_material for
the files; a self-signed root is made there at first start).

An SVID names exactly the identity its caller vouched for (a join token, or the SVID
being renewed) and carries the signing chain after it, so a peer that trusts only the
roots can verify it. Proxies trust `root.pem`, the bundle, which reaches them through
discovery. `reload()` reads the files again for a root rotation or a new intermediate
and refuses, keeping the CA in force, whatever does not fit.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mycelium.control.ca_material import (
    CaConfigError,
    CaMaterial,
    chain_to_root,
    ensure_material,
    key_id,
    key_pem,
    key_usage,
    load_material,
    write_private,
)
from mycelium.errors import MeshError
from mycelium.identity.spiffe import SpiffeId, SpiffeIdError

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
    certificate: Path  # the certificate, then the signing chain
    key: Path
    trust_bundle: Path


class CertificateAuthority:
    """Signs with the CA files under `ca_dir` (a self-signed root at first use)."""

    def __init__(self, ca_dir: Path, trust_domain: str, material: CaMaterial | None = None) -> None:
        self.ca_dir = ca_dir
        self.trust_domain = trust_domain
        self.material = material or ensure_material(ca_dir, trust_domain)
        self._key = self.material.key
        self.bundle_pem = self.material.bundle_pem
        self._chain_pem = self.material.chain_pem
        self.root_key_id = key_id(self.material.root_of(self.material.signing))

    @property
    def signing(self) -> x509.Certificate:
        return self.material.signing

    @property
    def roots(self) -> list[x509.Certificate]:
        return self.material.roots

    def reload(self) -> CertificateAuthority:
        """A CA from the files as they are now; `CaConfigError` (and this one stays in
        force) when they do not fit together."""
        return CertificateAuthority(self.ca_dir, self.trust_domain, load_material(self.ca_dir))

    def issue_serving_certificate(self, hosts: list[str]) -> ServingFiles:
        """A fresh certificate for the controller's TLS listeners, valid for `hosts`,
        written with its chain next to the CA files."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(
                f"spiffe://{self.trust_domain}/ns/mycelium-system/sa/controller"
            )
        ]
        for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = dt.datetime.now(dt.UTC)
        cert = self._sign_leaf(
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mycelium controller")])
            )
            .public_key(key.public_key())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + SERVING_VALIDITY, self.signing.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
        )
        files = ServingFiles(
            self.ca_dir / "controller.pem", self.ca_dir / "controller.key", self.ca_dir / "root.pem"
        )
        write_private(files.key, key_pem(key))
        files.certificate.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + self._chain_pem
        )
        return files

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
        not_after = min(now + validity, self.signing.not_valid_after_utc)
        cert = self._sign_leaf(
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .public_key(public_key)
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                critical=True,  # the subject is empty, so the SAN carries the identity
            )
            .add_extension(key_usage(signs_certificates=False), critical=True)
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self._chain_pem

    def _sign_leaf(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """What every end-entity certificate this CA signs has: not a CA, good for
        both ends of mTLS, naming the key that signed it; then signed."""
        return (
            builder.issuer_name(self.signing.subject)
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
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

    def verify_svid(self, certificate_pem: bytes, now: dt.datetime | None = None) -> SpiffeId:
        """The identity of an SVID (PEM, with the chain it was issued with) that chains
        to a root of the bundle and is valid `now`; `CsrRefused` (`untrusted`,
        `expired`) otherwise. Used to renew: a proxy proves who it is with the
        certificate it holds, which during a rotation may come from the previous signer."""
        try:
            certificates = x509.load_pem_x509_certificates(certificate_pem)
        except ValueError:
            raise CsrRefused("untrusted", "the current certificate is not PEM") from None
        certificate, presented = certificates[0], certificates[1:]
        now = now or dt.datetime.now(dt.UTC)
        intermediates = [
            c
            for c in [*presented, self.signing, *self.material.chain]
            if c.not_valid_before_utc <= now < c.not_valid_after_utc
        ]
        try:
            chain_to_root(certificate, intermediates, self.roots, None)
        except CaConfigError:
            raise CsrRefused(
                "untrusted", "the current certificate is not from this mesh's CA"
            ) from None
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
