"""`myc tap` end to end: the CLI (a subprocess) asks a real controller, which starts the
tap on a real sidecar over its discovery stream and relays what the sidecar reports;
requests go through the caller's sidecar to the tapped one on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.apps import EchoApp
from tests.support.polling import eventually
from tests.support.proxy_mesh import RATINGS, ProxyMesh

from mycelium.proxy.listeners.server import ProxyServer
from mycelium.telemetry.tap import Tap

# A Deployment's pod, as the runtime names it: <deployment>-<hash>-<n>.
POD = "ratings-5d8f7c-0"


@asynccontextmanager
async def ratings_pod(
    mesh: ProxyMesh, pod: str = POD, address: str = "127.0.0.21"
) -> AsyncIterator[ProxyServer]:
    app = await EchoApp("ratings", "127.0.0.1").start()
    await mesh.apply(RATINGS.format(port=app.port))
    sidecar = mesh.proxy(
        pod,
        workload=pod,
        labels={"app": "ratings"},
        address=address,
        inbound_address=address,
        app_address="127.0.0.1",
    )
    await sidecar.start()
    try:
        await eventually(
            lambda: pod in mesh.controller.discovery.sessions, what="the sidecar's stream"
        )
        yield sidecar
    finally:
        await sidecar.stop()
        await app.stop()


@asynccontextmanager
async def myc_tap(mesh: ProxyMesh, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "MYC_CONTROLLER": f"http://127.0.0.1:{mesh.controller.api_port}",
        "MYC_TOKEN": mesh.controller.admin_token,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mycelium.cli",
        "tap",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def tapping(sidecar: ProxyServer) -> Tap:
    assert sidecar.tap is not None
    return sidecar.tap


async def send_until_done(
    mesh: ProxyMesh, process: asyncio.subprocess.Process, paths: list[str]
) -> tuple[list[str], str]:
    """Send `paths` through the caller, round after round, until `myc tap` exits;
    its output lines and its standard error."""
    while process.returncode is None:
        for path in paths:
            await mesh.get(path, host="ratings")
        try:
            await asyncio.wait_for(process.wait(), 0.05)
        except TimeoutError:
            continue
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines(), err.decode()


async def test_tap_shows_a_deployments_requests_filtered_by_path_until_max(
    proxy_mesh: ProxyMesh,
) -> None:
    async with ratings_pod(proxy_mesh) as sidecar:
        tap = tapping(sidecar)
        # idle: requests through the sidecar build no event at all
        for _ in range(5):
            assert (await proxy_mesh.get("/api/idle", host="ratings")).status == 200
        assert tap.events_built == 0

        async with myc_tap(
            proxy_mesh, "deploy/ratings", "--path", "/api", "--max", "3", "-o", "json"
        ) as process:
            await eventually(lambda: tap.sessions, what="the tap to reach the sidecar")
            out, err = await send_until_done(proxy_mesh, process, ["/health", "/api/books"])

        lines: list[dict[str, Any]] = [json.loads(line) for line in out]
        assert len(lines) == 3
        for line in lines:
            assert line["path"] == "/api/books"
            assert line["method"] == "GET"
            assert line["status"] == 200
            assert line["direction"] == "inbound"
            assert line["authority"].startswith("ratings")
            assert line["workload"] == POD
            assert line["namespace"] == "default"
            assert line["destination"].startswith("127.0.0.1:")
            assert line["source"] == "127.0.0.1"
            assert line["source_principal"] is None  # this caller has no SVID: plaintext
            assert (line["mesh_mtls"], line["mesh_peer"]) == (False, None)
            assert line["latency_ms"] >= 0
        assert f"tapping deploy/ratings: {POD}" in err
        assert "tap ended (max): 3 requests" in err
        # the tap ended on the proxy too, which is idle (and free) again
        await eventually(lambda: not tap.sessions, what="the sidecar's tap to end")


async def test_tap_filters_by_status_class_and_prints_a_line_per_request(
    proxy_mesh: ProxyMesh,
) -> None:
    async with (
        ratings_pod(proxy_mesh) as sidecar,
        myc_tap(proxy_mesh, "svc/ratings", "--status", "5xx", "--max", "2") as process,
    ):
        await eventually(lambda: tapping(sidecar).sessions, what="the tap to reach the sidecar")
        lines, _ = await send_until_done(proxy_mesh, process, ["/ok", "/broken?status=503"])

    assert len(lines) == 2
    for line in lines:
        assert line.startswith(f"{POD} in  GET ratings")
        assert "/broken?status=503 503 " in line


async def test_a_tap_follows_a_deployment_through_a_rollout(proxy_mesh: ProxyMesh) -> None:
    successor = "ratings-77ee11-0"
    async with myc_tap(proxy_mesh, "deploy/ratings", "--max", "4", "-o", "json") as process:
        async with ratings_pod(proxy_mesh) as old:
            await eventually(lambda: tapping(old).sessions, what="the tap to reach the pod")
            for _ in range(2):
                assert (await proxy_mesh.get("/before", host="ratings")).status == 200
            taps = proxy_mesh.controller.discovery.taps.values()
            await eventually(
                lambda: sum(tap.sent for tap in taps) >= 2,  # type: ignore[attr-defined]
                what="the controller to relay the old pod's requests",
            )
        # the old pod is gone and the tap still runs: the new pod joins it when it connects
        async with ratings_pod(proxy_mesh, successor, "127.0.0.22") as new:
            await eventually(lambda: tapping(new).sessions, what="the tap to reach the new pod")
            out, err = await send_until_done(proxy_mesh, process, ["/after"])

    lines = [json.loads(line) for line in out]
    assert [(line["workload"], line["path"]) for line in lines] == [
        (POD, "/before"),
        (POD, "/before"),
        (successor, "/after"),
        (successor, "/after"),
    ]
    assert f"{POD} left the tap (disconnected)" in err  # named by its workload
    assert f"{successor} joined the tap" in err
    assert "tap ended (max): 4 requests" in err


async def test_tapping_a_deployment_without_proxies_says_so(proxy_mesh: ProxyMesh) -> None:
    async with myc_tap(proxy_mesh, "deploy/nothing") as process:
        _, err = await process.communicate()
    assert process.returncode == 1
    assert "no proxy serves deploy/nothing in namespace default" in err.decode()
    assert "a target is deploy/NAME, svc/NAME, pod/NAME or all" in err.decode()


async def test_tap_all_takes_every_proxy_of_the_namespace(proxy_mesh: ProxyMesh) -> None:
    # What the dashboard and the docs show as a target: all.
    async with myc_tap(proxy_mesh, "all", "--max", "1") as process:
        _, err = await send_until_done(proxy_mesh, process, ["/all"])
    assert err.startswith("tapping all: ")
    async with myc_tap(proxy_mesh, "all", "-n", "shop") as process:
        _, err_bytes = await process.communicate()
    assert process.returncode == 1
    assert "no proxy is connected in namespace shop" in err_bytes.decode()


async def test_a_wrong_target_is_answered_with_the_accepted_forms(proxy_mesh: ProxyMesh) -> None:
    for args in (["reviews"], ["deploy/"], []):
        async with myc_tap(proxy_mesh, *args) as process:
            _, err = await process.communicate()
        assert process.returncode != 0, args
        assert "deploy/NAME, svc/NAME, pod/NAME or all" in err.decode(), (args, err)
