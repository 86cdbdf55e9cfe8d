"""AuthorizationPolicy on the serving sidecar, over real sockets: a DENY rule refuses
what it names with 403 `denied` and lets the rest through; an ALLOW policy that names
identities refuses a peer that has none (plaintext); the app never sees a refused
request."""

from __future__ import annotations

from tests.support.polling import eventually
from tests.support.proxy_mesh import RATINGS, ProxyMesh, start_ratings

NO_ADMIN = """---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"""

ONLY_PRODUCTPAGE = """---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: viewers}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
"""


async def test_a_deny_rule_refuses_what_it_names_and_nothing_else(proxy_mesh: ProxyMesh) -> None:
    app, sidecar = await start_ratings(proxy_mesh)
    try:
        await eventually(lambda: 9080 in sidecar.core.active.inbound_ports, what="inbound config")
        await proxy_mesh.apply(RATINGS.format(port=app.port) + NO_ADMIN)
        await eventually(lambda: sidecar.core.active.authorizer.active, what="the policy")

        refused = await proxy_mesh.get("/admin/users", host="ratings")
        allowed = await proxy_mesh.get("/stars", host="ratings")

        assert refused.status == 403
        assert refused.headers["x-mycelium-reason"] == "denied"
        assert "policy default/no-admin" in await refused.text()
        assert allowed.status == 200
        assert [r["path"] for r in app.seen] == ["/stars"]
        assert sidecar.core.counters["authz_denied"] == 1
    finally:
        await sidecar.stop()
        await app.stop()


async def test_an_allow_policy_naming_identities_refuses_a_plaintext_peer(
    proxy_mesh: ProxyMesh,
) -> None:
    app, sidecar = await start_ratings(proxy_mesh)
    try:
        await eventually(lambda: 9080 in sidecar.core.active.inbound_ports, what="inbound config")
        await proxy_mesh.apply(RATINGS.format(port=app.port) + ONLY_PRODUCTPAGE)
        await eventually(lambda: sidecar.core.active.authorizer.active, what="the policy")

        response = await proxy_mesh.get("/stars", host="ratings")

        assert response.status == 403
        assert "no ALLOW policy matches" in await response.text()
        assert app.seen == []
    finally:
        await sidecar.stop()
        await app.stop()
