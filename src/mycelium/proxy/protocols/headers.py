"""The header rules of a proxy between its two connections (RFC 9110 section 7.6).

`strip_hop_by_hop` removes what belongs to one connection only before a message is
forwarded; `forwardable_trailers` keeps of a trailer section only what a trailer may
carry; `add_forwarding` records the hop in X-Forwarded-* and in Forwarded (RFC 7239).
Both take and return lists of (lowercase name, value) pairs, as the HTTP/1 parser gives
them, and never modify their input.

The framing of the forwarded message is the sender's to write: `strip_hop_by_hop`
removes Transfer-Encoding (the next hop's chunking is ours), while Content-Length, which
is end-to-end, stays (and must be what the forwarded body is).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Final, Literal

__all__ = [
    "HOP_BY_HOP",
    "NOT_IN_TRAILERS",
    "add_forwarding",
    "client_certificate_field",
    "forwardable_trailers",
    "strip_hop_by_hop",
    "trailers_to_forward",
]

type Fields = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE,
# Transfer-Encoding and Upgrade. TE: trailers is how a gRPC client says it reads
# trailers, but that is HTTP/2, where RFC 9113 section 8.2.2 keeps it; between HTTP/1.1
# hops TE only negotiates this connection's codings. Trailer announces the trailers of
# this connection's chunked body (RFC 9110 section 6.6.2). Proxy-Authorization and
# Proxy-Authenticate are credentials between a client and this proxy (RFC 9110
# sections 11.7.1-2), never for the next hop.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
_HOP_BY_HOP_BUT_UPGRADE: Final = HOP_BY_HOP - {b"upgrade"}


def strip_hop_by_hop(
    headers: Sequence[tuple[bytes, bytes]], *, keep_upgrade: bool = False
) -> Fields:
    """`headers` without the hop-by-hop fields and those the Connection field nominates.

    `keep_upgrade` keeps Upgrade (even if nominated), to forward an upgrade request or a
    101; the caller then adds `connection: upgrade`, which RFC 9110 section 7.8 asks of
    whoever sends Upgrade.
    """
    dropped = _HOP_BY_HOP_BUT_UPGRADE if keep_upgrade else HOP_BY_HOP
    kept = [field for field in headers if field[0] not in dropped]
    if len(kept) == len(headers):
        return kept  # no Connection field, so nothing nominated either
    nominated = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    nominated.discard(b"")
    if keep_upgrade:
        nominated.discard(b"upgrade")
    if nominated:
        kept = [field for field in kept if field[0] not in nominated]
    return kept


# RFC 9110 section 6.5.1: a trailer must not carry what framing, routing, request
# modifiers, authentication, response control or content handling depend on, since a
# recipient has acted on the head before the trailers arrive; one that sends such a
# field in a trailer is trying to have it read where the head's checks did not look
# (an Authorization after authorization, a Content-Length after the framing, a Host
# after the routing). With the hop-by-hop fields, these are never forwarded.
NOT_IN_TRAILERS: Final = HOP_BY_HOP | frozenset(
    {
        # framing and routing
        b"content-length",
        b"host",
        # request modifiers: controls and conditionals (RFC 9110 sections 7.6.2, 10.1, 13)
        b"cache-control",
        b"expect",
        b"max-forwards",
        b"pragma",
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        # authentication (RFC 9110 section 11) and cookies (RFC 6265)
        b"authorization",
        b"www-authenticate",
        b"authentication-info",
        b"proxy-authentication-info",
        b"cookie",
        b"set-cookie",
        # response control data (RFC 9110 section 15, RFC 9111)
        b"age",
        b"expires",
        b"date",
        b"location",
        b"retry-after",
        b"vary",
        b"warning",
        # how to process the content (RFC 9110 section 8)
        b"content-encoding",
        b"content-type",
        b"content-range",
        # what this mesh routes and authorizes by, and what identifies a peer
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"forwarded",
        b"x-forwarded-client-cert",
    }
)


def forwardable_trailers(trailers: Sequence[tuple[bytes, bytes]]) -> tuple[Fields, int]:
    """The fields of a trailer section that may be forwarded, and how many were
    dropped: those in NOT_IN_TRAILERS, and pseudo-headers (RFC 9113 section 8.1 keeps
    them out of trailers; an HTTP/1 name cannot start with ":" anyway)."""
    kept = [
        field
        for field in trailers
        if field[0] not in NOT_IN_TRAILERS and not field[0].startswith(b":")
    ]
    return kept, len(trailers) - len(kept)


def trailers_to_forward(
    trailers: Sequence[tuple[bytes, bytes]], counters: MutableMapping[str, int]
) -> Fields:
    """`forwardable_trailers`, counting what it dropped in `trailer_fields_dropped`."""
    kept, dropped = forwardable_trailers(trailers)
    if dropped:
        counters["trailer_fields_dropped"] = counters.get("trailer_fields_dropped", 0) + dropped
    return kept


_REPLACED: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"forwarded", b"x-forwarded-client-cert"}
)
# RFC 9110 section 5.6.2: the characters of a token, which RFC 7239 values may use bare.
_TCHARS: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def add_forwarding(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    client_address: str,
    proto: Literal["http", "https"],
    host: bytes | None,
    by: str | None = None,
    client_certificate: bytes | None = None,
) -> Fields:
    """`headers` with this hop recorded, for the next one:

    - X-Forwarded-For: `client_address` (an IP address, no port) appended to the list
      already there, in one field;
    - X-Forwarded-Proto: `proto`, replacing any earlier value;
    - X-Forwarded-Host: `host` (the request's Host), unless an earlier hop set it;
    - Forwarded (RFC 7239): an element `for=...;proto=...[;host=...][;by=...]` appended to
      the list already there, in one field. IPv6 nodes are written `"[2001:db8::1]"`;
    - X-Forwarded-Client-Cert: `client_certificate` (Envoy's `By=...;URI=...` form, the
      mTLS peer as this hop verified it) or nothing. Whatever the client sent is
      dropped: only the proxy that ended the TLS may say who the peer is.
    """
    prior_for: list[bytes] = []
    prior_forwarded: list[bytes] = []
    has_host = False
    out: Fields = []
    for field in headers:
        name = field[0]
        if name in _REPLACED:
            if name == b"x-forwarded-for":
                prior_for.append(field[1])
            elif name == b"forwarded":
                prior_forwarded.append(field[1])
            continue
        if name == b"x-forwarded-host":
            has_host = True
        out.append(field)
    prior_for.append(client_address.encode("ascii"))
    out.append((b"x-forwarded-for", b", ".join(prior_for)))
    out.append((b"x-forwarded-proto", proto.encode("ascii")))
    if host is not None and not has_host:
        out.append((b"x-forwarded-host", host))
    element = [b"for=" + _forwarded_value(_node(client_address)), b"proto=" + proto.encode()]
    if host is not None:
        element.append(b"host=" + _forwarded_value(host.decode("latin-1")))
    if by is not None:
        element.append(b"by=" + _forwarded_value(_node(by)))
    prior_forwarded.append(b";".join(element))
    out.append((b"forwarded", b", ".join(prior_forwarded)))
    if client_certificate is not None:
        out.append((b"x-forwarded-client-cert", client_certificate))
    return out


def client_certificate_field(own: str | None, peer: str | None) -> bytes | None:
    """The X-Forwarded-Client-Cert value for a request that came over mTLS from `peer`
    to us (`own`), both SPIFFE IDs; None for plaintext."""
    if peer is None:
        return None
    by = f"By={own};" if own else ""
    return f"{by}URI={peer}".encode("latin-1")


def _node(address: str) -> str:
    """An RFC 7239 node name: an IPv6 address goes in brackets (section 6)."""
    if address.count(":") > 1 and not address.startswith("["):
        return f"[{address}]"
    return address


def _forwarded_value(value: str) -> bytes:
    """A token as is, anything else as a quoted-string (RFC 7239 section 4)."""
    raw = value.encode("latin-1")
    if raw and all(byte in _TCHARS for byte in raw):
        return raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
