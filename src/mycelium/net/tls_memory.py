"""TLS material kept in memory: a certificate chain and its private key go into an
`ssl.SSLContext` without ever touching a file on disk (the key must not outlive the
process that made it, DESIGN.md "Identity")."""

from __future__ import annotations

import os
import ssl


def load_certificate_chain(context: ssl.SSLContext, certificate_pem: bytes, key_pem: bytes) -> None:
    """`context.load_cert_chain` from memory: the key goes through an anonymous
    in-memory file, never a file on disk."""
    fd = os.memfd_create("mycelium-svid", os.MFD_CLOEXEC)
    try:
        os.write(fd, certificate_pem + b"\n" + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
