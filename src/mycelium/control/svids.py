"""Issuing SVIDs: a join token says which identity, the CA signs the CSR for it.

One service behind both ways a proxy can ask (the TLS discovery stream, and the REST
endpoint kept for tools). Every refusal is counted by reason and logged with the peer,
never with the token.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from cryptography import x509

from mycelium.control.ca import CertificateAuthority, CsrRefused
from mycelium.control.join_tokens import JoinTokens, TokenRefused
from mycelium.identity.spiffe import SpiffeId

log = logging.getLogger("mycelium.control.svids")


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    identity: SpiffeId
    certificate: bytes  # PEM
    trust_bundle: bytes  # PEM
    expires_at: float  # unix time


class SvidService:
    def __init__(self, ca: CertificateAuthority, join_tokens: JoinTokens) -> None:
        self.ca = ca
        self.join_tokens = join_tokens
        self.issued = 0
        self.refused: Counter[str] = Counter()

    def issue(self, csr_pem: bytes, token: str, peer: str) -> IssuedSvid | tuple[str, str]:
        """The SVID, or (reason, sentence) saying why not."""
        try:
            identity = self.join_tokens.redeem(token)
        except TokenRefused as exc:
            reason = f"token_{exc.reason}"
            self.refused[reason] += 1
            log.warning("refused an SVID request from %s: join token %s", peer, exc.reason)
            return reason, f"the join token was refused: {exc.detail}"
        try:
            pem = self.ca.issue_svid(csr_pem, identity)
        except CsrRefused as exc:
            self.refused[exc.reason] += 1
            log.warning("refused an SVID request from %s for %s: %s", peer, identity, exc.reason)
            return exc.reason, str(exc)
        self.issued += 1
        expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
        log.info("issued an SVID for %s to %s", identity, peer)
        return IssuedSvid(identity, pem, self.ca.bundle_pem, expires)
