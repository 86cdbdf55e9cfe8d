"""Which bytes of a request choose its endpoint on a consistent-hash ring.

A cluster's `consistentHash` names a header, a cookie or the client's address; the
same function serves HTTP/1.1 and HTTP/2 requests, so a session sticks to its endpoint
whichever protocol carries it. No key (the header or cookie is absent) means the
balancer picks as if there were no ring: a request without a session id has no session
to keep.
"""

from __future__ import annotations

from collections.abc import Sequence

from mycelium.discovery.config import ConsistentHash


def request_hash_key(
    policy: ConsistentHash | None,
    headers: Sequence[tuple[bytes, bytes]],
    client_address: str,
) -> bytes | None:
    """The key that places this request on the ring, or None for no ring at all."""
    if policy is None:
        return None
    if policy.header:
        wanted = policy.header.lower().encode()
        for name, value in headers:
            if name == wanted:
                return value
        return None
    if policy.cookie:
        prefix = policy.cookie.encode() + b"="
        for name, value in headers:
            if name == b"cookie":
                for raw in value.split(b";"):
                    part = raw.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :]
        return None
    if policy.source_ip:
        return client_address.encode()
    return None
