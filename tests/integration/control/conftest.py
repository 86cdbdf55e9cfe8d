"""A real controller on loopback: free ports, the embedded store in a temp home."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tests.support.controller import Api, Mesh, controller_config

from mycelium.control.controller import Controller


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    controller = Controller(controller_config(tmp_path / "home"))
    await controller.start()
    async with aiohttp.ClientSession() as session:
        api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
        mesh = Mesh(controller, api, tmp_path / "home", [])
        try:
            yield mesh
        finally:
            for client in mesh.clients:
                await client.stop()
            await mesh.controller.stop()
