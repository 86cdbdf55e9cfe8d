"""SIGKILL the controller in the middle of applies: nothing acknowledged is lost and
nothing is half-applied. A real `myc controller` process on the embedded store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from tests.support.controller_process import ControllerProcess

# Several applies in flight at once, so that the kill lands inside some of them.
CONCURRENT_APPLIERS = 4
RESOURCES_PER_BATCH = 6


def batch(i: int) -> str:
    docs = []
    for j in range(RESOURCES_PER_BATCH - 1):
        docs.append(
            f"""apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: b{i}-s{j}, namespace: crash, labels: {{batch: "{i}"}}}}
spec: {{selector: {{app: b{i}-s{j}}}, ports: [{{name: http, port: 80}}]}}
"""
        )
    docs.append(
        f"""apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: b{i}, namespace: crash, labels: {{batch: "{i}"}}}}
spec:
  parentRefs: [{{name: b{i}-s0}}]
  rules: [{{backendRefs: [{{name: b{i}-s1, weight: 1}}, {{name: b{i}-s2, weight: 3}}]}}]
"""
    )
    return "---\n".join(docs)


async def test_sigkill_during_applies_loses_nothing_acknowledged_and_half_applies_nothing(
    tmp_path: Path,
) -> None:
    controller = ControllerProcess(tmp_path / "home")
    await controller.start()
    acknowledged: set[int] = set()
    interrupted: set[int] = set()
    next_batch = iter(range(10_000))
    headers = {"Authorization": f"Bearer {controller.token}"}

    async def applier(session: aiohttp.ClientSession) -> None:
        for i in next_batch:
            body = {"files": [{"name": f"batch-{i}.yaml", "content": batch(i)}]}
            try:
                async with session.post(
                    controller.base + "/api/v1/apply", json=body, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                acknowledged.add(i)
            except (aiohttp.ClientError, ConnectionError):
                interrupted.add(i)
                return

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(applier(session)) for _ in range(CONCURRENT_APPLIERS)]
        # Let a good number of applies land, then kill the process mid-stream.
        deadline = asyncio.get_running_loop().time() + 60
        while len(acknowledged) < 40:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        controller.kill()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert interrupted, "the kill should have interrupted at least one apply in flight"

    await controller.start()  # same home, same store file
    try:
        async with aiohttp.ClientSession() as session:
            url = controller.base + "/api/v1/resources?namespace=crash"
            async with session.get(url, headers=headers) as r:
                items = (await r.json())["items"]
    finally:
        controller.stop()

    present: dict[int, int] = {}
    for item in items:
        b = int(item["metadata"]["labels"]["batch"])
        present[b] = present.get(b, 0) + 1
    for i in acknowledged:
        assert present.get(i) == RESOURCES_PER_BATCH, f"acknowledged batch {i} lost resources"
    for i, count in present.items():
        assert count == RESOURCES_PER_BATCH, f"batch {i} was half-applied ({count} resources)"
    # Interrupted batches may have committed or not, but only as a whole (checked above).
    assert set(present) <= acknowledged | interrupted
