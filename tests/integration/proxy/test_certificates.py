"""A sidecar started with a join token fetches its SVID from the controller at start,
for the identity its node names; the admin endpoint shows who it is and until when,
never the key. A refused token leaves the proxy serving, with the reason counted."""

from __future__ import annotations

import json

from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, admin

from mycelium.identity.spiffe import SpiffeId


async def test_a_sidecar_fetches_its_svid_with_a_join_token(proxy_mesh: ProxyMesh) -> None:
    token = proxy_mesh.controller.join_tokens.mint("default", "reviews", 600).token
    sidecar = proxy_mesh.proxy("reviews-0", service_account="reviews", join_token=token)
    await sidecar.start()
    try:
        await eventually(lambda: sidecar.core.svid is not None, what="the SVID")
        assert sidecar.core.svid is not None
        assert sidecar.core.svid.identity == SpiffeId("cluster.local", "default", "reviews")
        status, dump = await admin(sidecar, "/config_dump")
        assert status == 200
        assert dump["identity"]["spiffeId"] == "spiffe://cluster.local/ns/default/sa/reviews"
        assert "PRIVATE KEY" not in json.dumps(dump)
    finally:
        await sidecar.stop()


async def test_a_refused_token_leaves_the_sidecar_serving(proxy_mesh: ProxyMesh) -> None:
    token = proxy_mesh.controller.join_tokens.mint("default", "reviews", 600).token
    proxy_mesh.controller.join_tokens.redeem(token)  # someone used it first
    sidecar = proxy_mesh.proxy("reviews-1", service_account="reviews", join_token=token)
    await sidecar.start()
    try:
        counters = sidecar.core.counters
        await eventually(lambda: counters["svid_refused_token_replayed"] == 1, what="refusal")
        assert sidecar.core.svid is None
        status, _ = await admin(sidecar, "/ready")
        assert status == 200
    finally:
        await sidecar.stop()
