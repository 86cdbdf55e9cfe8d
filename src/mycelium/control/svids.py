"""Issuing SVIDs: a join token (first certificate) or the current SVID (renewal) says
which identity, and the CA signs the CSR for it.

A renewal proves possession: besides its current certificate the proxy sends the new
CSR signed with the current key (`proof`, ECDSA-SHA256 over the CSR's DER), so a stolen
certificate without its key renews nothing.

One service behind both ways a proxy can ask (the TLS discovery stream, and the REST
endpoint kept for tools). Every refusal is counted by reason and logged with the peer,
never with the token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mycelium.control.ca import SVID_VALIDITY, CertificateAuthority, CsrRefused
from mycelium.control.join_tokens import JoinTokens, TokenRefused
from mycelium.identity.spiffe import SpiffeId

log = logging.getLogger("mycelium.control.svids")


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    identity: SpiffeId
    certificate: bytes  # PEM
    trust_bundle: bytes  # PEM
    expires_at: float  # unix time


@dataclass(frozen=True, slots=True)
class LatestSvid:
    identity: str
    issued_at: float  # unix time
    expires_at: float
    root: str  # key id of the root it chains to


class SvidService:
    def __init__(
        self,
        ca: CertificateAuthority,
        join_tokens: JoinTokens,
        validity: dt.timedelta = SVID_VALIDITY,
    ) -> None:
        self.ca = ca
        self.join_tokens = join_tokens
        self.validity = validity
        self.issued = 0
        self.renewed = 0
        self.refused: Counter[str] = Counter()
        # proxy id -> the last SVID it got, for `myc check` (a proxy whose certificate
        # nears expiry has stopped renewing) and for root rotation (which roots are
        # still in use)
        self.latest: dict[str, LatestSvid] = {}

    def renew(
        self, csr_pem: bytes, current_pem: bytes, proof: str, peer: str
    ) -> IssuedSvid | tuple[str, str]:
        """A new SVID for the identity of `current_pem`, whose key signed `proof`."""
        try:
            identity = self.ca.verify_svid(current_pem)
            current = x509.load_pem_x509_certificate(current_pem)
            key = current.public_key()
            csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise CsrRefused("bad_proof", "the current certificate's key is not ECDSA")
            key.verify(base64.b64decode(proof, validate=True), csr_der, ec.ECDSA(hashes.SHA256()))
        except CsrRefused as exc:
            return self._refuse(peer, "renewal", exc.reason, str(exc))
        except (InvalidSignature, ValueError, binascii.Error):
            detail = "the proof is not the CSR signed with the current key"
            return self._refuse(peer, "renewal", "bad_proof", detail)
        answer = self._sign(csr_pem, identity, peer)
        if isinstance(answer, IssuedSvid):
            self.renewed += 1
        return answer

    def _refuse(self, peer: str, what: str, reason: str, message: str) -> tuple[str, str]:
        """Count and log a refusal (the reason and the peer, never a credential)."""
        self.refused[reason] += 1
        said = reason.replace("token_", "join token ", 1)
        log.warning("refused %s from %s: %s", what, peer, said)
        return reason, message

    def issue(self, csr_pem: bytes, token: str, peer: str) -> IssuedSvid | tuple[str, str]:
        """The SVID, or (reason, sentence) saying why not."""
        try:
            identity = self.join_tokens.redeem(token)
        except TokenRefused as exc:
            detail = f"the join token was refused: {exc.detail}"
            return self._refuse(peer, "an SVID request", f"token_{exc.reason}", detail)
        return self._sign(csr_pem, identity, peer)

    def _sign(self, csr_pem: bytes, identity: SpiffeId, peer: str) -> IssuedSvid | tuple[str, str]:
        try:
            pem = self.ca.issue_svid(csr_pem, identity, self.validity)
        except CsrRefused as exc:
            return self._refuse(peer, f"an SVID for {identity}", exc.reason, str(exc))
        self.issued += 1
        expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
        self.latest[peer] = LatestSvid(identity.uri, time.time(), expires, self.ca.root_key_id)
        log.info("issued an SVID for %s to %s", identity, peer)
        return IssuedSvid(identity, pem, self.ca.bundle_pem, expires)
