"""Two controllers on one etcd allocate Service vips at the same time and never hand
out one address twice: the compare on each address's claim settles every race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tests.support.controller import Api, controller_config
from tests.support.etcd import EtcdCluster

from mycelium.api.loading import load_documents
from mycelium.control.apply import apply_resources
from mycelium.control.controller import Controller
from mycelium.control.vips import stored_vip

pytestmark = pytest.mark.system

SERVICES_PER_CONTROLLER = 6


def service(name: str) -> str:
    return f"""apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
"""


@pytest.fixture
async def two_controllers(tmp_path: Path) -> AsyncIterator[list[Controller]]:
    cluster = EtcdCluster.start(1)
    controllers: list[Controller] = []
    try:
        for i in range(2):
            config = controller_config(tmp_path / f"home-{i}", store_url=cluster.url)
            controller = Controller(config)
            controllers.append(controller)
            await controller.start()
        yield controllers
    finally:
        for controller in controllers:
            await controller.stop()
        cluster.stop()


async def stored_vips(controller: Controller) -> dict[str, str | None]:
    listing = await controller.store.range("/mycelium/service/")
    return {kv.key: stored_vip(kv.value) for kv in listing.kvs}


async def test_two_controllers_applying_at_once_never_share_a_vip(
    two_controllers: list[Controller],
) -> None:
    async with aiohttp.ClientSession() as session:
        apis = [
            Api(f"http://127.0.0.1:{c.api_port}", c.admin_token, session) for c in two_controllers
        ]
        answers = await asyncio.gather(
            *(
                api.apply(service(f"svc-{n}-{i}"))
                for n, api in enumerate(apis)
                for i in range(SERVICES_PER_CONTROLLER)
            )
        )
    assert all(status == 200 for status, _ in answers), answers
    # Both controllers start their search at the same address: all but one lose.
    races = [
        apply_resources(
            c.store,
            load_documents(service(f"race-{n}-{i}"), source="race.yaml"),
            random_start=lambda: 0,
        )
        for n, c in enumerate(two_controllers)
        for i in range(2)
    ]
    await asyncio.gather(*races)

    vips = await stored_vips(two_controllers[0])
    assert len(vips) == 2 * SERVICES_PER_CONTROLLER + 4
    assert None not in vips.values()
    assert len(set(vips.values())) == len(vips)
