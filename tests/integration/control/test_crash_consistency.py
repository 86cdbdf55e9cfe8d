"""SIGKILL the controller in the middle of applies: nothing acknowledged is lost and
nothing is half-applied. A real `myc controller` process on the embedded store."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

# Several applies in flight at once, so that the kill lands inside some of them.
CONCURRENT_APPLIERS = 4
RESOURCES_PER_BATCH = 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class ControllerProcess:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.api_port = free_port()
        self.discovery_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def start(self) -> None:
        self._spawn()
        await self._wait_ready()

    def _spawn(self) -> None:
        myc = Path(sys.executable).parent / "myc"
        self.log = self.home.parent / "controller.log"
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(myc),
                    "controller",
                    "--home",
                    str(self.home),
                    "--listen-api",
                    f"127.0.0.1:{self.api_port}",
                    "--listen-discovery",
                    f"127.0.0.1:{self.discovery_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = asyncio.get_running_loop().time() + 30
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.proc.poll() is None, self.log.read_text()
                try:
                    async with session.get(self.base + "/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, "controller did not start"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def token(self) -> str:
        return (self.home / "admin-token").read_text().strip()


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
