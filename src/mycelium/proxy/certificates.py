"""The proxy's own SVID: fetched at start with a join token, kept on the core.

The key is made here and stays in this process; the CSR goes to the controller over
the discovery stream. The result (`core.svid`) is what the mTLS listeners and upstream
pools use; the admin endpoint shows its identity and expiry, never the key. A refused
request is logged with the controller's reason (never the token) and counted as
`svid_refused_<reason>`; the proxy keeps serving plaintext.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mycelium.discovery.errors import CertificateRefusedError
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid

if TYPE_CHECKING:
    from mycelium.proxy.core import ProxyCore

log = logging.getLogger("mycelium.proxy.certificates")

# Waiting for the controller (the stream reconnects by itself) is bounded per attempt.
REQUEST_TIMEOUT_SECONDS = 30.0


async def fetch_svid(core: ProxyCore, join_token: str) -> Svid | None:
    """Get this proxy's first SVID; None (logged and counted) when refused."""
    client = core.discovery
    assert client is not None, "the discovery client starts first"
    await client.connected.wait()
    node = client.node
    identity = SpiffeId(client.trust_domain, node.namespace, node.service_account)
    request = new_key_and_request(identity)
    try:
        issued = await client.request_certificate(
            request.csr_pem, join_token, timeout=REQUEST_TIMEOUT_SECONDS
        )
    except CertificateRefusedError as exc:
        core.counters[f"svid_refused_{exc.reason}"] += 1
        log.error("the controller refused our certificate request for %s: %s", identity, exc)
        return None
    except TimeoutError:
        core.counters["svid_timeout"] += 1
        log.error("no answer to our certificate request within %ss", REQUEST_TIMEOUT_SECONDS)
        return None
    svid = Svid(issued.certificate.encode(), request.key_pem(), issued.trust_bundle.encode())
    core.svid = svid
    core.counters["svid_issued"] += 1
    log.info("identity %s, certificate valid until %s", svid.identity, svid.expires_at)
    return svid
