"""Join tokens: how a proxy that has no certificate yet proves which identity it may get.

`myc token create --namespace N --service-account S --ttl 10m` (or the runtime, for the
pods it starts) asks the controller for a token bound to one identity. The proxy sends
it with its first CSR; the CA then signs that identity and no other. A token is:

    myc1.<payload>.<mac>      payload: base64url JSON {"ns", "sa", "exp", "nonce"}
                              mac: base64url HMAC-SHA256(key, "myc1." + payload)

The key is 32 random bytes in `<home>/ca/join-token.key` (0600), made at first start.
Tokens are single use: a nonce seen once is refused until the token would have expired
anyway (the replay record lives in this controller's memory; several controllers would
keep it in the store, which is not built yet). Every refusal has a reason word
(`malformed`, `forged`, `expired`, `replayed`) for counters; no token or key is ever
written to a log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from mycelium.errors import MeshError
from mycelium.identity.spiffe import SpiffeId, SpiffeIdError

PREFIX = "myc1."
MAX_TTL_SECONDS = 24 * 3600
KEY_BYTES = 32


class TokenRefused(MeshError):
    """A join token that does not vouch for anything; `reason` names why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    identity: SpiffeId
    expires_at: float  # unix time


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: Path) -> bytes:
    """The token key at `path`, made (0600) on first use."""
    if path.exists():
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise MeshError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte token key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class JoinTokens:
    """Mints and checks join tokens for one trust domain."""

    def __init__(self, key: bytes, trust_domain: str) -> None:
        self._key = key
        self.trust_domain = trust_domain
        self._used: dict[str, float] = {}  # nonce -> when its token expires
        self.refusals: Counter[str] = Counter()

    def mint(self, namespace: str, service_account: str, ttl_seconds: float) -> IssuedToken:
        identity = SpiffeId(self.trust_domain, namespace, service_account)
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise MeshError(
                f"a join token lives more than 0 s and at most {MAX_TTL_SECONDS} s, "
                f"not {ttl_seconds:g} s"
            )
        expires = time.time() + ttl_seconds
        body = {
            "ns": namespace,
            "sa": service_account,
            "exp": round(expires, 3),
            "nonce": secrets.token_hex(16),
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        mac = hmac.new(self._key, (PREFIX + payload).encode(), hashlib.sha256).digest()
        return IssuedToken(f"{PREFIX}{payload}.{_b64(mac)}", identity, expires)

    def vouches_for(self, token: str, now: float | None = None) -> SpiffeId:
        """The identity `token` vouches for, without spending it (a discovery stream
        proves itself with the token its certificate request will spend)."""
        try:
            identity, _, _ = self._check(token, time.time() if now is None else now)
        except TokenRefused as exc:
            self.refusals[exc.reason] += 1
            raise
        return identity

    def redeem(self, token: str, now: float | None = None) -> SpiffeId:
        """The identity `token` vouches for, once; `TokenRefused` otherwise."""
        try:
            identity, nonce, expires = self._check(token, time.time() if now is None else now)
        except TokenRefused as exc:
            self.refusals[exc.reason] += 1
            raise
        self._used[nonce] = expires
        return identity

    def _check(self, token: str, now: float) -> tuple[SpiffeId, str, float]:
        if not token.startswith(PREFIX) or token.count(".") != 2:
            raise TokenRefused("malformed", "not a Mycelium join token (myc1.<payload>.<mac>)")
        payload, mac_text = token[len(PREFIX) :].split(".")
        try:
            mac = _unb64(mac_text)
        except (binascii.Error, ValueError):
            raise TokenRefused("malformed", "the token's signature is not base64url") from None
        expected = hmac.new(self._key, (PREFIX + payload).encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise TokenRefused("forged", "the token was not minted by this controller")
        try:
            body = json.loads(_unb64(payload))
            identity = SpiffeId(self.trust_domain, str(body["ns"]), str(body["sa"]))
            expires = float(body["exp"])
            nonce = str(body["nonce"])
        except (ValueError, KeyError, TypeError, SpiffeIdError):
            detail = "the token's payload is not what it should be"
            raise TokenRefused("malformed", detail) from None
        if now >= expires:
            raise TokenRefused("expired", f"the token expired {now - expires:.0f} s ago")
        self._forget_expired(now)
        if nonce in self._used:
            raise TokenRefused("replayed", "the token was already used; mint a new one")
        return identity, nonce, expires

    def _forget_expired(self, now: float) -> None:
        # A used nonce needs remembering only while its token could still be presented.
        if len(self._used) > 1024:
            self._used = {n: e for n, e in self._used.items() if e > now}
