"""A real TLS ClientHello's bytes, as a client outside the mesh would open with."""

from __future__ import annotations

import contextlib
import ssl


def client_hello(*alpn: str, server_name: str | None = "example") -> bytes:
    """The first flight of an OpenSSL client offering `alpn` (nothing when empty), and
    naming `server_name` (SNI) unless it is None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server: expected
        tls.do_handshake()
    return outgoing.read()
