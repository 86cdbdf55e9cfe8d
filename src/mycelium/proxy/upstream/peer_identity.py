"""Whom a pooled mTLS connection reached: the endpoint's SPIFFE ID, checked once.

The connection pools open mTLS with asyncio's TLS (`net.dial.Dialer.connect`); SVIDs
name a workload, not a host, so no host name is checked there, and the peer is judged
here instead, after the handshake and before the first request.
"""

from __future__ import annotations

import asyncio
from typing import cast

from mycelium.identity.tls import PeerIdentityError, peer_identity
from mycelium.proxy.errors import UpstreamConnectFailed


def check_peer_identity(connected: asyncio.BaseTransport, expected: str, where: str) -> None:
    """After an mTLS connect: the endpoint must present `expected` (its registry
    identity; "" accepts any mesh identity). Aborts and raises otherwise."""
    transport = cast(asyncio.Transport, connected)
    try:
        found = peer_identity(transport.get_extra_info("ssl_object")).uri
    except PeerIdentityError as exc:
        transport.abort()
        raise UpstreamConnectFailed(f"{where}: {exc}") from None
    if expected and found != expected:
        transport.abort()
        raise UpstreamConnectFailed(f"{where} presented {found}, not {expected}")
