"""A proxy's own SVID: fetched at start with a join token, renewed at half-life.

Shared by every kind of proxy (sidecar now; gateways and ztunnel later): it needs only
a `SvidHolder`, which has the discovery client, counters and the `svid` slot. The key
is made here and stays in this process; the CSR goes to the controller over the
discovery stream. The holder's `svid` is what its mTLS listeners and upstream pools
use; a sidecar's admin endpoint shows its identity and expiry, never the key. A refused
request is logged with the controller's reason (never the token) and counted as
`svid_refused_<reason>`; the proxy keeps serving plaintext.

The trust bundle comes from the controller at connect and after every CA change;
new connections verify peers with it. When the CA's signer changes (a root rotation),
the proxy renews at a random moment within the window the controller gives.

Renewal starts at half the certificate's life, give or take a tenth of it (jitter keeps
a fleet of proxies from renewing in the same second), and proves possession: the new
CSR is signed with the current key. New connections then use the new certificate; open
ones keep theirs. If the controller cannot be reached the proxy keeps its certificate,
retries, and from a quarter of the life left warns in the log and in the
`svid_expiring` counter at every try; an expired certificate counts `svid_expired`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import random
from collections.abc import MutableMapping
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mycelium.discovery.client import DiscoveryClient
from mycelium.discovery.errors import CertificateRefusedError
from mycelium.discovery.protocol import TrustBundle
from mycelium.identity.csr import KeyAndRequest, new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid


class SvidHolder(Protocol):
    """What keeps an SVID: a proxy's core."""

    svid: Svid | None

    @property
    def discovery(self) -> DiscoveryClient | None: ...

    @property
    def counters(self) -> MutableMapping[str, int]: ...


log = logging.getLogger("mycelium.identity.renewal")

# Waiting for the controller (the stream reconnects by itself) is bounded per attempt.
REQUEST_TIMEOUT_SECONDS = 30.0
RENEW_AT = 0.5  # of the certificate's life
RENEW_JITTER = 0.1  # of the life, either way
WARN_WHEN_LEFT = 0.25  # of the life
MAX_RETRY_SECONDS = 30.0


async def run_identity(core: SvidHolder, join_token: str, rng: random.Random) -> None:
    """Get the first SVID, then keep it renewed for as long as the proxy runs; follow
    the trust bundle the controller sends, and renew early when the CA's signer has
    changed (a root rotation)."""
    client = core.discovery
    assert client is not None, "the discovery client starts first"
    renew_now = asyncio.Event()
    client.on_trust_bundle.append(lambda message: _follow_bundle(core, message, rng, renew_now))
    if await fetch_svid(core, join_token) is None:
        return
    while True:
        svid = core.svid
        assert svid is not None
        # The life counts from when we got it: the CA backdates certificates a little
        # for clock skew, which would otherwise make half-life come too soon.
        life = (svid.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        wait = max(0.0, life * (RENEW_AT + rng.uniform(-1, 1) * RENEW_JITTER))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(renew_now.wait(), wait)
        renew_now.clear()
        svid = core.svid
        assert svid is not None
        await _renew_until_done(core, svid, life)


def _follow_bundle(
    core: SvidHolder, message: TrustBundle, rng: random.Random, renew_now: asyncio.Event
) -> None:
    """A trust bundle from the controller: trust its roots from the next connection on,
    and if our certificate is from an earlier signer, renew soon."""
    svid = core.svid
    if svid is None:
        return  # the certificate on its way comes with this bundle
    bundle = message.bundle.encode()
    if bundle != svid.bundle_pem:
        svid = core.svid = svid.with_bundle(bundle)
        core.counters["trust_bundle_updates"] += 1
        log.info("the trust bundle changed; new connections verify peers with it")
    if svid.issuer_key_id != message.signer:
        delay = rng.uniform(0, max(0.0, message.renew_within))
        log.info("the CA signs with a new key; renewing our certificate within %.0f s", delay)
        asyncio.get_running_loop().call_later(delay, renew_now.set)


async def _renew_until_done(core: SvidHolder, svid: Svid, life: float) -> None:
    retry = min(MAX_RETRY_SECONDS, max(1.0, life / 20))
    # An attempt waits for the stream to come back, but not so long that the warnings
    # below come too late for a short-lived certificate.
    attempt = min(REQUEST_TIMEOUT_SECONDS, max(1.0, life / 10))
    while True:
        if await renew_svid(core, svid, timeout=attempt) is not None:
            return
        left = (svid.expires_at - dt.datetime.now(dt.UTC)).total_seconds()
        if left <= 0:
            core.counters["svid_expired"] += 1
            log.error("our certificate for %s has expired; still trying to renew", svid.identity)
        elif left <= life * WARN_WHEN_LEFT:
            core.counters["svid_expiring"] += 1
            log.warning(
                "our certificate for %s expires in %.0f s and could not be renewed yet",
                svid.identity,
                left,
            )
        await asyncio.sleep(retry)


async def fetch_svid(core: SvidHolder, join_token: str) -> Svid | None:
    """Get the first SVID; None (logged and counted) when refused."""
    client = core.discovery
    assert client is not None, "the discovery client starts first"
    await client.connected.wait()
    node = client.node
    identity = SpiffeId(client.trust_domain, node.namespace, node.service_account)
    request = new_key_and_request(identity)
    svid = await _ask(
        core, request, "certificate request", REQUEST_TIMEOUT_SECONDS, token=join_token
    )
    if svid is not None:
        core.counters["svid_issued"] += 1
        log.info("identity %s, certificate valid until %s", svid.identity, svid.expires_at)
    return svid


async def renew_svid(
    core: SvidHolder, svid: Svid, timeout: float = REQUEST_TIMEOUT_SECONDS
) -> Svid | None:
    """A new SVID for the same identity, proving possession of the current one."""
    request = new_key_and_request(svid.identity)
    current_key = serialization.load_pem_private_key(svid.key_pem, password=None)
    assert isinstance(current_key, ec.EllipticCurvePrivateKey)
    csr_der = x509.load_pem_x509_csr(request.csr_pem).public_bytes(serialization.Encoding.DER)
    proof = base64.b64encode(current_key.sign(csr_der, ec.ECDSA(hashes.SHA256()))).decode()
    renewed = await _ask(
        core, request, "renewal", timeout, current=svid.certificate_pem, proof=proof
    )
    if renewed is not None:
        core.counters["svid_renewed"] += 1
        log.info(
            "renewed our certificate for %s, valid until %s", renewed.identity, renewed.expires_at
        )
    return renewed


async def _ask(
    core: SvidHolder,
    request: KeyAndRequest,
    what: str,
    timeout: float,
    *,
    token: str = "",
    current: bytes = b"",
    proof: str = "",
) -> Svid | None:
    """Send `request` with its credential; keep and return the SVID that comes back,
    or log and count why none did."""
    client = core.discovery
    assert client is not None
    try:
        issued = await client.request_certificate(
            request.csr_pem, token, timeout, current=current, proof=proof
        )
    except CertificateRefusedError as exc:
        core.counters[f"svid_refused_{exc.reason}"] += 1
        log.error("the controller refused our %s: %s", what, exc)
        return None
    except TimeoutError:
        core.counters["svid_timeout"] += 1
        log.warning("no answer to our %s within %.0f s", what, timeout)
        return None
    svid = Svid(issued.certificate.encode(), request.key_pem(), issued.trust_bundle.encode())
    core.svid = svid
    client.present_certificate(svid.certificate_pem, svid.key_pem)
    return svid
