"""A small real mesh for proxy tests: a controller (embedded store), two versions of a
`reviews` app on their own loopback addresses, and a caller's sidecar proxy — all on
loopback, configured only through the controller. The fixture is in
tests/integration/proxy/conftest.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from tests.support.apps import EchoApp
from tests.support.controller import Api, controller_config
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery.client import ControllerAddress
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, ProxySettings

BASE = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: reviews}}
spec:
  selector: {{app: reviews}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: reviews-v1, labels: {{app: reviews, version: v1}}}}
spec: {{address: 127.0.0.11}}
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: reviews-v2, labels: {{app: reviews, version: v2}}}}
spec: {{address: 127.0.0.12}}
---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""


def free_port_on(*hosts: str) -> int:
    """A port number free on every given loopback address."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


@dataclass
class ProxyMesh:
    controller: Controller
    api: Api
    home: Path
    v1: EchoApp
    v2: EchoApp
    caller: ProxyServer
    session: aiohttp.ClientSession
    app_port: int

    @property
    def outbound(self) -> str:
        addr = self.caller.bound["outbound"]
        return f"http://{addr.host}:{addr.port}"

    async def apply(self, text: str) -> None:
        status, body = await self.api.apply(BASE.format(port=self.app_port) + text)
        assert status == 200, body

    async def get(
        self, path: str, host: str = "reviews", **kwargs: object
    ) -> aiohttp.ClientResponse:
        headers = {"Host": host, **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        response = await self.session.get(self.outbound + path, headers=headers, **kwargs)  # type: ignore[arg-type]
        await response.read()
        return response

    async def settle(self, version_before: str) -> None:
        """Wait until the caller accepted a config newer than `version_before`."""
        await eventually(lambda: self.caller.core.active.version != version_before)

    def proxy(self, node_id: str, **settings: object) -> ProxyServer:
        node = NodeInfo(
            id=node_id,
            namespace="default",
            workload=settings.pop("workload", None),  # type: ignore[arg-type]
            labels=settings.pop("labels", {}),  # type: ignore[arg-type]
            address=settings.pop("address", None),  # type: ignore[arg-type]
            service_account=settings.pop("service_account", "default"),  # type: ignore[arg-type]
            role=settings.pop("role", "sidecar"),  # type: ignore[arg-type]
        )
        join_token = settings.pop("join_token", None)
        return ProxyServer(
            ProxySettings(
                node=node,
                controllers=[ControllerAddress("127.0.0.1", self.controller.discovery_port)],
                trust_bundle=self.home / "ca" / "root.pem",
                outbound=settings.pop("outbound", ListenAddress("127.0.0.1", 0)),  # type: ignore[arg-type]
                admin=ListenAddress("127.0.0.1", 0),
                health=ListenAddress("127.0.0.1", 0),
                metrics=settings.pop("metrics", ListenAddress("127.0.0.1", 0)),  # type: ignore[arg-type]
                drain_seconds=2.0,
                **settings,  # type: ignore[arg-type]
            ),
            join_token=join_token,  # type: ignore[arg-type]
        )


# A second service with its own sidecar, for tests of the serving side.
RATINGS = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: ratings}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
"""


async def start_ratings(mesh: ProxyMesh) -> tuple[EchoApp, ProxyServer]:
    """A ratings app on 127.0.0.1 behind its own sidecar, which serves it on 127.0.0.21."""
    app = await EchoApp("ratings", "127.0.0.1").start()
    await mesh.apply(RATINGS.format(port=app.port))
    sidecar = mesh.proxy(
        "ratings-0",
        workload="ratings-0",
        labels={"app": "ratings"},
        address="127.0.0.21",
        inbound_address="127.0.0.21",
        app_address="127.0.0.1",
    )
    await sidecar.start()
    return app, sidecar


async def admin(server: ProxyServer, path: str, which: str = "admin") -> tuple[int, Any]:
    address = server.bound[which]
    url = f"http://{address.host}:{address.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


@asynccontextmanager
async def sidecar(mesh: ProxyMesh, node_id: str, **settings: object) -> AsyncIterator[ProxyServer]:
    """A sidecar with an SVID: a join token for `service_account` (default "default"),
    waited for until its certificate came."""
    account = str(settings.get("service_account", "default"))
    token = mesh.controller.join_tokens.mint("default", account, 600).token
    proxy = mesh.proxy(node_id, join_token=token, **settings)
    await proxy.start()
    try:
        await eventually(lambda: proxy.core.svid is not None, what=f"{node_id}'s SVID")
        yield proxy
    finally:
        await proxy.stop()


def serving_sidecar(
    mesh: ProxyMesh,
    node_id: str,
    address: str,
    app: str = "ratings",
    labels: dict[str, str] | None = None,
    **settings: object,
) -> AbstractAsyncContextManager[ProxyServer]:
    """The SVID-holding sidecar of an `app` workload that registers itself: it serves
    the app's ports on `address` and hands requests to the app on 127.0.0.1. More
    `labels` join its `app`; more `settings` (ProxySettings fields) go to the proxy."""
    return sidecar(
        mesh,
        node_id,
        workload=node_id,
        labels={"app": app, **(labels or {})},
        address=address,
        inbound_address=address,
        app_address="127.0.0.1",
        service_account=app,
        **settings,
    )


@asynccontextmanager
async def running_proxy_mesh(tmp_path: Path) -> AsyncIterator[ProxyMesh]:
    """A controller, two reviews apps registered as workloads (BASE), and a caller
    sidecar (`productpage-0`), for the block."""
    controller = Controller(controller_config(tmp_path / "home"))
    await controller.start()
    port = free_port_on("127.0.0.11", "127.0.0.12")
    v1 = await EchoApp("reviews-v1", "127.0.0.11", port).start()
    v2 = await EchoApp("reviews-v2", "127.0.0.12", port).start()
    session = aiohttp.ClientSession(auto_decompress=False)
    api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
    status, body = await api.apply(BASE.format(port=port))
    assert status == 200, body
    mesh = ProxyMesh(controller, api, tmp_path / "home", v1, v2, None, session, port)  # type: ignore[arg-type]
    caller = mesh.proxy("productpage-0")
    await caller.start()
    mesh.caller = caller
    try:
        yield mesh
    finally:
        await caller.stop()
        await session.close()
        await v1.stop()
        await v2.stop()
        await controller.stop()
