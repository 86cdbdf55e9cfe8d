"""The proxy tests' fixture: see tests/support/proxy_mesh.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import uvloop
from tests.support.apps import EchoApp
from tests.support.controller import Api, controller_config
from tests.support.proxy_mesh import BASE, ProxyMesh, free_port_on

from mycelium.control.controller import Controller


@pytest.fixture
async def proxy_mesh(tmp_path: Path) -> AsyncIterator[ProxyMesh]:
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


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, object]:
    """The proxy runs on uvloop in production, so its tests do too."""
    return {"uvloop": uvloop.new_event_loop}
