"""The CA's files: a user-supplied intermediate signs SVIDs that verify against the
root alone; files that do not fit together are refused with the file and the fix named;
a rotation keeps renewals working while both roots are trusted."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mycelium.control.ca import CertificateAuthority, CsrRefused
from mycelium.control.ca_material import (
    CaConfigError,
    key_id,
    key_pem,
    load_material,
    new_root,
    write_private,
)
from mycelium.control.root_rotation import proxies_cut_off
from mycelium.control.svids import LatestSvid
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")
PEM = serialization.Encoding.PEM


def intermediate_of(
    root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey, *, ca: bool = True
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """What a company's PKI hands the mesh: an intermediate CA under its own root."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "shop mesh CA")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    return certificate, key


def place(
    ca_dir: Path,
    roots: list[x509.Certificate],
    signing: list[x509.Certificate],
    key: ec.EllipticCurvePrivateKey,
) -> None:
    ca_dir.mkdir(parents=True, exist_ok=True)
    (ca_dir / "root.pem").write_bytes(b"".join(r.public_bytes(PEM) for r in roots))
    (ca_dir / "signing.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in signing))
    write_private(ca_dir / "signing.key", key_pem(key))


def openssl_verify(tmp_path: Path, bundle: bytes, chain: bytes) -> subprocess.CompletedProcess[str]:
    (tmp_path / "bundle.pem").write_bytes(bundle)
    leaf, *rest = x509.load_pem_x509_certificates(chain)
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp_path / "untrusted.pem").write_bytes(b"".join(c.public_bytes(PEM) for c in rest))
    argv = ["openssl", "verify", "-CAfile", str(tmp_path / "bundle.pem")]
    if rest:
        argv += ["-untrusted", str(tmp_path / "untrusted.pem")]
    return subprocess.run(
        [*argv, str(tmp_path / "leaf.pem")], capture_output=True, text=True, check=False
    )


def test_a_user_supplied_intermediate_signs_svids_that_verify_against_the_root(
    tmp_path: Path,
) -> None:
    root, root_key = new_root("cluster.local")
    intermediate, key = intermediate_of(root, root_key)
    place(tmp_path / "ca", [root], [intermediate], key)

    ca = CertificateAuthority(tmp_path / "ca", "cluster.local")
    request = new_key_and_request(REVIEWS)
    pem = ca.issue_svid(request.csr_pem, REVIEWS)

    chain = x509.load_pem_x509_certificates(pem)
    assert [c.subject for c in chain[1:]] == [intermediate.subject]  # the chain travels along
    verified = openssl_verify(tmp_path, ca.bundle_pem, pem)
    assert verified.returncode == 0, verified.stderr
    assert Svid(pem, request.key_pem(), ca.bundle_pem).issuer_key_id == key_id(intermediate)
    assert ca.verify_svid(pem) == REVIEWS  # and it renews
    assert ca.root_key_id == key_id(root)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("foreign_intermediate", "does not chain to any root of the trust bundle"),
        ("wrong_key", "is not the key of the certificate"),
        ("leaf_as_signer", "is not a CA that may sign"),
        ("intermediate_in_bundle", "holds roots only"),
        ("readable_key", "chmod 600"),
        ("no_key", "signing key .* is missing"),
        ("garbage_bundle", "is not PEM certificates"),
    ],
)
def test_files_that_do_not_fit_are_refused_with_the_file_named(
    tmp_path: Path, damage: str, message: str
) -> None:
    root, root_key = new_root("cluster.local")
    intermediate, key = intermediate_of(root, root_key)
    ca_dir = tmp_path / "ca"
    place(ca_dir, [root], [intermediate], key)
    if damage == "foreign_intermediate":
        other_root, other_key = new_root("cluster.local")
        foreign, foreign_key = intermediate_of(other_root, other_key)
        place(ca_dir, [root], [foreign], foreign_key)
    elif damage == "wrong_key":
        write_private(ca_dir / "signing.key", key_pem(ec.generate_private_key(ec.SECP256R1())))
    elif damage == "leaf_as_signer":
        leaf, leaf_key = intermediate_of(root, root_key, ca=False)
        place(ca_dir, [root], [leaf], leaf_key)
    elif damage == "intermediate_in_bundle":
        place(ca_dir, [root, intermediate], [intermediate], key)
    elif damage == "readable_key":
        os.chmod(ca_dir / "signing.key", 0o644)
    elif damage == "no_key":
        (ca_dir / "signing.key").unlink()
    elif damage == "garbage_bundle":
        (ca_dir / "root.pem").write_text("not a certificate")

    with pytest.raises(CaConfigError, match=message) as refused:
        load_material(ca_dir)
    assert str(ca_dir) in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)


def test_the_layout_before_intermediates_is_taken_over(tmp_path: Path) -> None:
    root, root_key = new_root("cluster.local")
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "root.pem").write_bytes(root.public_bytes(PEM))
    write_private(ca_dir / "root.key", key_pem(root_key))

    ca = CertificateAuthority(ca_dir, "cluster.local")

    assert ca.signing == root
    assert ca.roots == [root]
    assert not (ca_dir / "root.key").exists()
    assert (ca_dir / "signing.key").stat().st_mode & 0o777 == 0o600


def test_during_a_rotation_both_signers_certificates_renew_until_the_old_root_goes(
    tmp_path: Path,
) -> None:
    ca_dir = tmp_path / "ca"
    old = CertificateAuthority(ca_dir, "cluster.local")
    request = new_key_and_request(REVIEWS)
    from_old = old.issue_svid(request.csr_pem, REVIEWS)

    # step 1: trust the new root too; step 2: sign with it
    new, new_key = new_root("cluster.local")
    both = old.bundle_pem + new.public_bytes(PEM)
    (ca_dir / "root.pem").write_bytes(both)
    (ca_dir / "signing.pem").write_bytes(new.public_bytes(PEM))
    write_private(ca_dir / "signing.key", key_pem(new_key))
    rotated = old.reload()

    from_new = rotated.issue_svid(request.csr_pem, REVIEWS)
    assert rotated.verify_svid(from_old) == REVIEWS  # proxies not yet moved still renew
    assert openssl_verify(tmp_path, rotated.bundle_pem, from_old).returncode == 0
    assert openssl_verify(tmp_path, rotated.bundle_pem, from_new).returncode == 0

    # step 3: drop the old root: its certificates are strangers now
    (ca_dir / "root.pem").write_bytes(new.public_bytes(PEM))
    final = rotated.reload()
    with pytest.raises(CsrRefused) as refused:
        final.verify_svid(from_old)
    assert refused.value.reason == "untrusted"
    assert final.verify_svid(from_new) == REVIEWS


def test_a_reload_that_drops_a_root_names_the_proxies_it_would_cut_off() -> None:
    old, _ = new_root("cluster.local")
    new, _ = new_root("cluster.local")
    now = 1_000_000.0
    latest = {
        "moved-0": LatestSvid("spiffe://x/ns/a/sa/b", now - 10, now + 100, key_id(new)),
        "stuck-0": LatestSvid("spiffe://x/ns/a/sa/c", now - 10, now + 100, key_id(old)),
        "gone-0": LatestSvid("spiffe://x/ns/a/sa/d", now - 500, now - 1, key_id(old)),
    }
    assert proxies_cut_off([old, new], [new], latest, now) == ["stuck-0"]
    assert proxies_cut_off([old, new], [old, new], latest, now) == []
