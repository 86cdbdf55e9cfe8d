"""Who may open a discovery stream: a proxy proves the identity its hello claims.

A stream carries a workload's config and registers its address as an endpoint, so an
unproven claim would let anyone pull another workload's config or pull its traffic.
A proxy proves who it is with, in order:
- its SVID, presented as the TLS client certificate (every reconnect after its first
  certificate), which must chain to a root of the bundle and be valid now;
- a join token for that identity, checked but not spent (the certificate request
  spends it), for the stream that fetches the first certificate.
The identity proven must be the one the hello claims (namespace and service account).
A proxy with neither is refused, unless the controller allows anonymous proxies (a
plaintext mesh, for trying things out). Sans-IO: the controller counts, logs and rate
limits the refusals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mycelium.control.ca import CertificateAuthority, CsrRefused
from mycelium.control.join_tokens import JoinTokens, TokenRefused
from mycelium.discovery.protocol import Hello
from mycelium.errors import MeshError
from mycelium.identity.spiffe import SpiffeId

type ProvenBy = Literal["certificate", "join_token", "anonymous"]


@dataclass(frozen=True, slots=True)
class StreamCredentials:
    peer: str  # the client's address, for logs and limits
    certificate_pem: bytes | None  # the client certificate TLS accepted, if any


class StreamRefused(MeshError):
    """`reason` in one word for counters; the message says what to do."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def authenticate_stream(
    hello: Hello,
    credentials: StreamCredentials,
    *,
    ca: CertificateAuthority,
    join_tokens: JoinTokens,
    allow_anonymous: bool,
) -> ProvenBy:
    """How the proxy proved the identity its hello claims; `StreamRefused` if it did not.
    Where anonymous proxies are allowed, credentials that fail make the stream
    anonymous instead (its certificate request then says what was wrong with them)."""
    try:
        return _prove(hello, credentials, ca, join_tokens, allow_anonymous)
    except StreamRefused:
        if allow_anonymous:
            return "anonymous"
        raise


def _prove(
    hello: Hello,
    credentials: StreamCredentials,
    ca: CertificateAuthority,
    join_tokens: JoinTokens,
    allow_anonymous: bool,
) -> ProvenBy:
    node = hello.node
    if credentials.certificate_pem is not None:
        try:
            identity = ca.verify_svid(credentials.certificate_pem)
        except CsrRefused as exc:
            raise StreamRefused(
                f"certificate_{exc.reason}", f"the client certificate was refused: {exc.detail}"
            ) from None
        _check_claim(node.namespace, node.service_account, identity, "client certificate")
        return "certificate"
    if hello.token:
        try:
            identity = join_tokens.vouches_for(hello.token)
        except TokenRefused as exc:
            raise StreamRefused(
                f"token_{exc.reason}", f"the join token was refused: {exc.detail}"
            ) from None
        _check_claim(node.namespace, node.service_account, identity, "join token")
        return "join_token"
    if allow_anonymous:
        return "anonymous"
    raise StreamRefused(
        "unauthenticated",
        "a proxy must prove its identity: start it with a join token (myc token create) "
        "so that it can get its certificate, or allow anonymous proxies on the controller "
        "(--allow-anonymous-proxies) for a plaintext mesh",
    )


def _check_claim(namespace: str, service_account: str, proven: SpiffeId, by: str) -> None:
    if (proven.namespace, proven.service_account) != (namespace, service_account):
        raise StreamRefused(
            "identity_mismatch",
            f"the proxy claims namespace {namespace!r}, service account "
            f"{service_account!r}, but its {by} is for {proven}",
        )
