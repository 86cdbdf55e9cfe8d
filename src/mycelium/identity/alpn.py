"""The ALPN protocol names of the mesh's own TLS, apart from the TLS code itself: the
sans-IO cores that read a ClientHello need the names without importing `ssl`."""

from __future__ import annotations

# The ALPN protocol of sidecar-to-sidecar mTLS: a serving sidecar tells the mesh's TLS
# from an app's own TLS by it before decrypting anything (see proxy/protocols/tls_hello).
MESH_ALPN = "mycelium-mtls"
# The same mTLS for a relayed TCP connection whose first plaintext bytes are the
# caller's introduction (`proxy/protocols/peer_preamble.py`), as Istio's
# `istio-peer-exchange` ALPN announces its TCP metadata exchange. A serving sidecar
# prefers it; HTTP clients do not offer it, TCP relays do.
MESH_PEER_ALPN = "mycelium-mtls-peer"
