"""Proxies seen through the CLI: a real discovery client connects, registers its
workload, and shows up in `myc status` and in `myc describe` of its Service."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from mycelium.discovery import protocol as p
from mycelium.discovery.client import ControllerAddress, DiscoveryClient

if TYPE_CHECKING:
    from conftest import Controller

REVIEWS = """\
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""


@pytest.fixture
async def proxy(controller: Controller) -> AsyncIterator[DiscoveryClient]:
    client = DiscoveryClient(
        [ControllerAddress("127.0.0.1", controller.discovery_port)],
        p.NodeInfo(
            id="reviews-v1-0",
            workload="reviews-v1-0",
            labels={"app": "reviews", "version": "v1"},
            address="198.18.0.11",
            ports=[9080],
            service_account="reviews",
        ),
        trust_bundle=controller.home / "ca" / "root.pem",
    )
    await client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), 15)
        yield client
    finally:
        await client.stop()


async def eventually_in(controller: Controller, args: list[str], text: str) -> str:
    """Run `myc args` until its output contains `text` (the proxy syncs asynchronously)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        out = (await controller.amyc(*args)).ok()
        if text in out:
            return out
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{text!r} never appeared in `myc {' '.join(args)}`:\n{out}")
        await asyncio.sleep(0.1)


async def test_a_connected_proxy_appears_in_status(
    controller: Controller, proxy: DiscoveryClient
) -> None:
    status = await eventually_in(controller, ["status"], "synced")

    lines = status.splitlines()
    header = next(line for line in lines if line.startswith("ID"))
    assert re.split(r"\s{2,}", header.strip()) == [
        "ID",
        "NAMESPACE",
        "VERSION SENT",
        "VERSION ACKED",
        "STATE",
        "LAST NACK",
    ]
    row = next(line for line in lines if line.startswith("reviews-v1-0"))
    assert row.split()[1] == "default"
    assert "Proxies:      1" in status


async def test_describe_shows_the_registered_workload_and_its_proxy(
    controller: Controller, proxy: DiscoveryClient
) -> None:
    (await controller.amyc("apply", "-f", "-", stdin=REVIEWS)).ok()

    described = await eventually_in(controller, ["describe", "svc", "reviews"], "198.18.0.11")

    workloads = described[described.index("Workloads:") : described.index("Proxies:")]
    assert "reviews-v1-0" in workloads
    proxies = described[described.index("Proxies:") :]
    assert "reviews-v1-0" in proxies
