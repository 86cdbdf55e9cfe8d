"""A proxy gets its SVID over its TLS discovery stream: the CSR goes with a join token,
the certificate comes back signed for the token's identity; a replayed or forged token,
or a CSR for another identity, comes back refused with the reason."""

from __future__ import annotations

import pytest
from cryptography import x509
from tests.support.controller import Mesh

from mycelium.discovery.errors import CertificateRefusedError
from mycelium.identity.csr import new_key_and_request
from mycelium.identity.spiffe import SpiffeId
from mycelium.identity.tls import Svid, client_context

REVIEWS = SpiffeId("cluster.local", "shop", "reviews")


async def test_a_proxy_gets_its_svid_over_the_discovery_stream(mesh: Mesh) -> None:
    client = mesh.client("reviews-0", namespace="shop", service_account="reviews")
    await client.start()
    token = mesh.controller.join_tokens.mint("shop", "reviews", 600).token
    request = new_key_and_request(REVIEWS)

    issued = await client.request_certificate(request.csr_pem, token)

    assert client.trust_domain == "cluster.local"
    certificate = x509.load_pem_x509_certificate(issued.certificate.encode())
    assert SpiffeId.from_certificate(certificate) == REVIEWS
    assert issued.expires_at == certificate.not_valid_after_utc.timestamp()
    # what came back is enough to speak mTLS
    svid = Svid(issued.certificate.encode(), request.key_pem(), issued.trust_bundle.encode())
    assert svid.identity == REVIEWS
    client_context(svid)
    assert mesh.controller.svids.issued == 1

    with pytest.raises(CertificateRefusedError) as replayed:
        await client.request_certificate(new_key_and_request(REVIEWS).csr_pem, token)
    assert replayed.value.reason == "token_replayed"


async def test_bad_requests_are_refused_with_their_reason(mesh: Mesh) -> None:
    client = mesh.client("reviews-1", namespace="shop", service_account="reviews")
    await client.start()
    token = mesh.controller.join_tokens.mint("shop", "reviews", 600).token

    payments = new_key_and_request(SpiffeId("cluster.local", "shop", "payments"))
    with pytest.raises(CertificateRefusedError) as mismatch:
        await client.request_certificate(payments.csr_pem, token)
    assert mismatch.value.reason == "identity_mismatch"

    with pytest.raises(CertificateRefusedError) as forged:
        await client.request_certificate(new_key_and_request(REVIEWS).csr_pem, token + "x")
    assert forged.value.reason in {"token_forged", "token_malformed"}

    assert mesh.controller.svids.refused["identity_mismatch"] == 1
    # the stream survives refusals: config still flows
    assert client.connected.is_set()


async def test_a_burst_of_certificate_requests_is_refused_after_a_few(mesh: Mesh) -> None:
    client = mesh.client("busy-0", namespace="shop", service_account="reviews")
    await client.start()
    reasons = []
    for _ in range(8):
        try:
            await client.request_certificate(new_key_and_request(REVIEWS).csr_pem, "myc1.x.y")
        except CertificateRefusedError as exc:
            reasons.append(exc.reason)
    # five refused on their merits (a burst of 5), then refused before any work
    assert reasons == ["token_malformed"] * 5 + ["rate_limited"] * 3
