"""The ALPN protocol names of the mesh's own TLS, apart from the TLS code itself: the
sans-IO cores that read a ClientHello need the names without importing `ssl`."""

from __future__ import annotations

# The ALPN protocol of sidecar-to-sidecar mTLS: a serving sidecar tells the mesh's TLS
# from an app's own TLS by it before decrypting anything (see proxy/protocols/tls_hello).
MESH_ALPN = "mycelium-mtls"
