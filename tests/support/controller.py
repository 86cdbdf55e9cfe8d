"""Talking to a real controller in tests: a small REST client and a discovery-client
factory, bundled as `Mesh`."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from mycelium.control.config import ControllerConfig
from mycelium.control.controller import Controller
from mycelium.discovery import protocol as p
from mycelium.discovery.client import ControllerAddress, DiscoveryClient


@dataclass
class Api:
    base: str
    token: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as r:
            return r.status, await r.json()

    async def apply(self, content: str, name: str = "test.yaml") -> tuple[int, Any]:
        return await self.call(
            "POST", "/api/v1/apply", json={"files": [{"name": name, "content": content}]}
        )


@dataclass
class Mesh:
    controller: Controller
    api: Api
    home: Path
    clients: list[DiscoveryClient]

    def client(
        self, node_id: str, *, state_dir: Path | None = None, **kwargs: Any
    ) -> DiscoveryClient:
        node = p.NodeInfo(
            id=node_id,
            namespace=kwargs.pop("namespace", "default"),
            workload=kwargs.pop("workload", None),
            labels=kwargs.pop("labels", {}),
            address=kwargs.pop("address", None),
            ports=kwargs.pop("ports", []),
            service_account=kwargs.pop("service_account", "default"),
        )
        client = DiscoveryClient(
            [ControllerAddress("127.0.0.1", self.controller.discovery_port)],
            node,
            trust_bundle=self.home / "ca" / "root.pem",
            state_dir=state_dir,
            **kwargs,
        )
        self.clients.append(client)
        return client


def controller_config(home: Path, **overrides: Any) -> ControllerConfig:
    settings: dict[str, Any] = {
        "home": home,
        "api_port": 0,
        "discovery_port": 0,
        "heartbeat_seconds": 0.3,
        "lease_ttl_seconds": 1.5,
        # Most tests' proxies have no join token (they test routing, not identity);
        # the tests of stream authentication turn this off.
        "allow_anonymous_proxies": True,
    }
    settings.update(overrides)
    return ControllerConfig(**settings)


@asynccontextmanager
async def running_controller(home: Path, **overrides: Any) -> AsyncIterator[Controller]:
    """An in-process controller for the block (see `controller_config` for the
    test defaults that `overrides` change)."""
    controller = Controller(controller_config(home, **overrides))
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()


@asynccontextmanager
async def running_mesh(
    home: Path, *, fresh_connections: bool = False, **overrides: Any
) -> AsyncIterator[Mesh]:
    """A controller (see `running_controller`) with a REST client; the discovery
    clients made with `Mesh.client` are stopped at the end. `fresh_connections`: the
    REST client keeps no connection open between calls (tests that count the REST
    port's connections)."""
    connector = aiohttp.TCPConnector(force_close=fresh_connections)
    async with (
        running_controller(home, **overrides) as controller,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
        mesh = Mesh(controller, api, home, [])
        try:
            yield mesh
        finally:
            for client in mesh.clients:
                await client.stop()


async def hello_answer(controller: Controller, hello: p.Hello) -> p.ServerMessage:
    """Open a stream as a proxy would, say hello, and return the controller's answer."""
    tls = ssl.create_default_context(cafile=str(controller.config.ca_dir / "root.pem"))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", controller.discovery_port, ssl=tls, server_hostname="127.0.0.1"
    )
    try:
        writer.write(p.encode(hello))
        decoder = p.FrameDecoder()
        while True:
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "the controller closed the stream without a word"
            for frame in decoder.feed(data):
                return p.parse_server_message(frame)
    finally:
        writer.close()
