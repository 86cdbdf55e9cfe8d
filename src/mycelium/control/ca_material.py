"""The CA's files: the roots proxies trust and the certificate that signs, checked whole.

`<home>/ca/` holds:
- `root.pem`: the trust bundle, every root proxies trust (two during a root rotation);
- `signing.pem`: the certificate that signs SVIDs, then its chain up to (not including)
  a root of the bundle. The self-signed root made at first start signs by itself; a
  user-supplied intermediate is placed here with its chain;
- `signing.key`: its private key, 0600, read by the controller only. It never appears
  in logs, API output or snapshots. (One controller holds the CA: several controllers
  would need the key encrypted in the store, which is not built.)

`load_material` reads and checks them together: every bundle entry a self-signed CA,
the signing certificate a CA whose key is `signing.key` and whose chain reaches a root
of the bundle, nothing expired. Anything wrong is a `CaConfigError` naming the file and
what to do, and nothing is applied: the caller keeps the CA it had.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mycelium.errors import ConfigError

ROOT_VALIDITY = dt.timedelta(days=3650)
MAX_CHAIN = 4  # intermediates between a signing certificate and its root

type SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CaConfigError(ConfigError):
    """The CA's files are missing, unreadable or do not fit together."""


@dataclass(frozen=True, slots=True)
class CaMaterial:
    roots: list[x509.Certificate]  # the trust bundle
    signing: x509.Certificate
    chain: list[x509.Certificate]  # from the signing certificate's issuer up, roots excluded
    key: SigningKey

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(r.public_bytes(serialization.Encoding.PEM) for r in self.roots)

    @property
    def chain_pem(self) -> bytes:
        """What follows a leaf this CA signs: the signing certificate unless it is a
        root, then its intermediates."""
        sent = [] if self.signing in self.roots else [self.signing, *self.chain]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in sent)

    @property
    def signer_key_id(self) -> str:
        return key_id(self.signing)

    def root_of(self, certificate: x509.Certificate) -> x509.Certificate:
        """The bundle root `certificate` chains to through our chain (CaConfigError if
        none)."""
        return chain_to_root(certificate, [self.signing, *self.chain], self.roots, None)


def key_id(certificate: x509.Certificate) -> str:
    """A certificate's key as hex (its SubjectKeyIdentifier, computed if absent): the
    name a root or signer goes by in status output and in the trust bundle message."""
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest.hex()


def authority_key_id(certificate: x509.Certificate) -> str | None:
    """Which key signed `certificate`, when it says so."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    found = extension.value.key_identifier
    return found.hex() if found else None


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures only; a CA's key also signs certificates and revocation lists."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def new_root(
    trust_domain: str, now: dt.datetime | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh self-signed root (ECDSA P-256), named with its creation time so that two
    roots of one trust domain are told apart by people as well as by key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mycelium"),
            x509.NameAttribute(
                NameOID.COMMON_NAME,
                f"mycelium root CA ({trust_domain}) {now:%Y-%m-%dT%H:%M:%SZ}",
            ),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def ensure_material(ca_dir: Path, trust_domain: str) -> CaMaterial:
    """Load the CA from `ca_dir`, creating a self-signed root there on first start."""
    bundle, signing, key = ca_dir / "root.pem", ca_dir / "signing.pem", ca_dir / "signing.key"
    old_key = ca_dir / "root.key"  # the layout before intermediates: the root signed
    if bundle.exists() and old_key.exists() and not key.exists():
        signing.write_bytes(bundle.read_bytes())
        old_key.replace(key)
    if not (bundle.exists() or signing.exists() or key.exists()):
        cert, new_key = new_root(trust_domain)
        write_private(key, key_pem(new_key))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        signing.write_bytes(pem)
        bundle.write_bytes(pem)
    return load_material(ca_dir)


def load_material(ca_dir: Path, now: dt.datetime | None = None) -> CaMaterial:
    """Read and check `root.pem`, `signing.pem` and `signing.key` in `ca_dir`."""
    now = now or dt.datetime.now(dt.UTC)
    bundle_path, signing_path = ca_dir / "root.pem", ca_dir / "signing.pem"
    key_path = ca_dir / "signing.key"
    roots = _certificates(bundle_path, "the trust bundle")
    for root in roots:
        if not _is_ca(root) or not _issued_by(root, root):
            raise CaConfigError(
                f"{bundle_path}: {root.subject.rfc4514_string()} is not a self-signed CA "
                "certificate; the trust bundle holds roots only (put intermediates in "
                "signing.pem, after the signing certificate)"
            )
        _check_validity(root, now, bundle_path)
    certificates = _certificates(signing_path, "the signing certificate")
    signing, chain = certificates[0], [c for c in certificates[1:] if c not in roots]
    if not _is_ca(signing):
        raise CaConfigError(
            f"{signing_path}: the first certificate is not a CA that may sign certificates "
            "(it needs basicConstraints CA:TRUE and keyUsage keyCertSign)"
        )
    _check_validity(signing, now, signing_path)
    for intermediate in chain:
        _check_validity(intermediate, now, signing_path)
    key = _private_key(key_path)
    if _public_der(key.public_key()) != _public_der(signing.public_key()):
        raise CaConfigError(
            f"{key_path} is not the key of the certificate in {signing_path}: put the "
            "matching pair there"
        )
    chain_to_root(signing, chain, roots, signing_path)
    return CaMaterial(roots=roots, signing=signing, chain=chain, key=key)


def chain_to_root(
    certificate: x509.Certificate,
    intermediates: list[x509.Certificate],
    roots: list[x509.Certificate],
    where: Path | None,
) -> x509.Certificate:
    """The root of `roots` that `certificate` reaches through `intermediates`, each link
    a verified signature by a CA. Raises CaConfigError (naming `where`) otherwise."""
    current = certificate
    for _ in range(MAX_CHAIN + 1):
        for root in roots:
            if _issued_by(current, root):
                return root
        parent = next(
            (c for c in intermediates if c != current and _is_ca(c) and _issued_by(current, c)),
            None,
        )
        if parent is None:
            break
        current = parent
    place = f"{where}: " if where is not None else ""
    raise CaConfigError(
        f"{place}{certificate.subject.rfc4514_string() or 'the certificate'} does not chain "
        "to any root of the trust bundle (root.pem): add its root to root.pem first, or "
        "its intermediates after it in signing.pem"
    )


def _public_der(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    if not constraints.value.ca:
        return False
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return True  # no key usage: any use is allowed
    return usage.value.key_cert_sign


def _check_validity(certificate: x509.Certificate, now: dt.datetime, where: Path) -> None:
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        raise CaConfigError(
            f"{where}: {certificate.subject.rfc4514_string()} is valid from "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now: replace it"
        )


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaConfigError(f"{what} {path} is missing") from None
    except OSError as exc:
        raise CaConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CaConfigError(f"{path} is not PEM certificates ({what})") from None
    return certificates


def _private_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaConfigError(f"the signing key {path} is missing") from None
    except OSError as exc:
        raise CaConfigError(f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # never the key's bytes in the message
        raise CaConfigError(
            f"{path} is not an unencrypted PEM private key (decrypt it first: the "
            "controller reads it at start and at every reload)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CaConfigError(f"{path}: the signing key must be ECDSA or RSA")
    if path.stat().st_mode & 0o077:
        raise CaConfigError(
            f"{path} can be read by others than its owner: chmod 600 it (it signs every "
            "identity in the mesh)"
        )
    return key
