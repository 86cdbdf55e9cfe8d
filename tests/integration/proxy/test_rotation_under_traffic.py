"""Certificates change under steady traffic, and no request fails: SVIDs renewed at
half-life, and the mesh's root CA rotated.

Two sidecars talk mTLS (ratings STRICT, only productpage allowed) while a client keeps
calling through them. After each change the caller's pooled connections are closed, so
that new handshakes prove the new certificates and bundles verify each other.

The root rotation follows the steps docs/identity.md gives an operator:
1. trust a new root as well (append it to root.pem, `myc ca reload`): every proxy gets
   the two-root bundle;
2. sign with the new root (signing.pem and signing.key, reload): every proxy renews
   from it by itself, within the controller's spread window;
3. drop the old root (reload): refused while a proxy that is offline still holds a
   certificate from it, named in the refusal; forced, it goes.
At the end the discovery stream is cut, and the proxy must reconnect: it trusts the
controller's certificate from the new root through the bundle it was sent, and proves
itself with its own certificate to a controller that no longer lets anonymous proxies in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from tests.support.apps import EchoApp
from tests.support.polling import eventually
from tests.support.proxy_mesh import RATINGS, ProxyMesh, serving_sidecar, sidecar

from mycelium.control.ca_material import key_id, key_pem, new_root, write_private
from mycelium.proxy.listeners.server import ProxyServer

POLICY = """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewers}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
"""
PEM = serialization.Encoding.PEM


class SteadyTraffic:
    """A client calling ratings through productpage's sidecar, one request at a time."""

    def __init__(self, mesh: ProxyMesh, caller: ProxyServer) -> None:
        self._url = f"http://127.0.0.1:{caller.bound['outbound'].port}/stars"
        self._mesh = mesh
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with self._mesh.session.get(self._url, headers={"Host": "ratings"}) as r:
                    await r.read()
                    self.statuses[r.status] += 1
                    if r.status != 200:
                        self.failures.append(f"{r.status} {r.headers.get('x-mycelium-reason')}")
            except Exception as exc:  # every failure is the finding
                self.failures.append(repr(exc))
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def more(self, count: int = 20) -> None:
        """Wait until `count` more requests succeeded."""
        target = self.statuses[200] + count
        await eventually(lambda: self.statuses[200] >= target, what=f"{count} more requests")


async def fresh_handshakes(caller: ProxyServer, server: ProxyServer) -> None:
    """Close the caller's idle pooled connections until a request had to handshake
    anew (a connection busy at the moment of closing goes back to the pool)."""
    before = server.core.counters["mtls_connections"]

    def handshaken() -> bool:
        caller.core.mtls_pools.close_idle()
        return server.core.counters["mtls_connections"] > before

    await eventually(handshaken, what="a new mTLS handshake between the sidecars")


async def reconnect_discovery(proxy: ProxyServer) -> None:
    """Drop the proxy's discovery stream; it must reconnect, trusting the controller."""
    client = proxy.core.discovery
    assert client is not None
    writer = client._writer  # the stream itself: no public way to cut it
    assert writer is not None
    writer.close()
    await eventually(
        lambda: client._writer is not writer and client.connected.is_set(),
        what=f"{proxy.settings.node.id} reconnected to the controller",
    )


@asynccontextmanager
async def secured_ratings(
    mesh: ProxyMesh,
) -> AsyncIterator[tuple[ProxyServer, ProxyServer, SteadyTraffic]]:
    """ratings behind its sidecar (STRICT, only productpage allowed), productpage's
    sidecar, and a client's steady traffic through both, already flowing; the traffic
    stops on the way out, so its counts are final after the block."""
    app = await EchoApp("ratings", "127.0.0.1").start()
    try:
        await mesh.apply(RATINGS.format(port=app.port) + POLICY)
        async with (
            serving_sidecar(mesh, "ratings-0", "127.0.0.21") as server,
            sidecar(mesh, "productpage-1", service_account="productpage") as caller,
        ):
            await eventually(
                lambda: server.core.active.authorizer.active, what="the server's policy"
            )
            traffic = SteadyTraffic(mesh, caller)
            traffic.start()
            try:
                await traffic.more()
                yield server, caller, traffic
            finally:
                await traffic.stop()
    finally:
        await app.stop()


async def test_a_root_rotation_under_steady_traffic_fails_no_request(
    proxy_mesh: ProxyMesh,
) -> None:
    mesh = proxy_mesh
    controller = mesh.controller
    controller.config = dataclasses.replace(controller.config, rotation_spread_seconds=0.5)
    ca_dir: Path = mesh.home / "ca"
    old_root = controller.ca.roots[0]
    # A proxy that got a certificate from the old root and then went offline.
    async with sidecar(mesh, "stray-0", service_account="stray"):
        pass
    async with secured_ratings(mesh) as (server, caller, traffic):
        # 1. trust the new root as well
        new, new_key = new_root("cluster.local")
        with (ca_dir / "root.pem").open("ab") as bundle:
            bundle.write(new.public_bytes(PEM))
        controller.reload_ca()
        both = old_root.public_bytes(PEM) + new.public_bytes(PEM)
        await eventually(
            lambda: all(p.core.svid.bundle_pem == both for p in (server, caller)),  # type: ignore[union-attr]
            what="the two-root bundle on both proxies",
        )
        await fresh_handshakes(caller, server)
        await traffic.more()

        # 2. sign with the new root: the proxies renew from it by themselves
        (ca_dir / "signing.pem").write_bytes(new.public_bytes(PEM))
        write_private(ca_dir / "signing.key", key_pem(new_key))
        controller.reload_ca()
        await eventually(
            lambda: all(
                p.core.svid.issuer_key_id == key_id(new)  # type: ignore[union-attr]
                for p in (server, caller)
            ),
            what="both proxies renewed from the new root",
        )
        await fresh_handshakes(caller, server)
        await traffic.more()

        # 3. drop the old root: refused while the stray still needs it
        (ca_dir / "root.pem").write_bytes(new.public_bytes(PEM))
        status, body = await mesh.api.call("POST", "/api/v1/ca/reload", json={})
        assert status == 409, body
        assert body["details"] == ["stray-0"]
        assert "stray-0" in body["message"]
        assert controller.ca.roots[0] == old_root  # nothing applied
        status, body = await mesh.api.call("POST", "/api/v1/ca/reload", json={"force": True})
        assert status == 200, body
        assert [r["keyId"] for r in body["roots"]] == [key_id(new)]
        await eventually(
            lambda: all(
                p.core.svid.bundle_pem == new.public_bytes(PEM)  # type: ignore[union-attr]
                for p in (server, caller)
            ),
            what="the new root alone on both proxies",
        )
        await fresh_handshakes(caller, server)
        await traffic.more()
        # From here on a stream must prove itself: the caller's certificate
        # (from the new root) must survive the bundle changes it went through.
        controller.config = dataclasses.replace(controller.config, allow_anonymous_proxies=False)
        proven = controller.streams_proven["certificate"]
        await reconnect_discovery(caller)
        assert controller.streams_proven["certificate"] == proven + 1
        await traffic.more()
    assert traffic.failures == []
    assert traffic.statuses[200] >= 100


async def test_svids_renewed_at_half_life_under_steady_traffic_fail_no_request(
    proxy_mesh: ProxyMesh,
) -> None:
    mesh = proxy_mesh
    mesh.controller.svids.validity = dt.timedelta(seconds=10)  # renewal after ~4-6 s
    async with secured_ratings(mesh) as (server, caller, traffic):
        first = {p: p.core.svid for p in (server, caller)}
        await eventually(
            lambda: all(p.core.counters["svid_renewed"] >= 1 for p in first),
            timeout=15,
            what="both sidecars renewed their certificates",
        )
        assert all(p.core.svid is not first[p] for p in first)
        await traffic.more()  # the connections opened before still serve
        await fresh_handshakes(caller, server)  # and new ones use the new SVIDs
        await traffic.more()
    assert traffic.failures == []
    assert traffic.statuses[200] >= 60
