"""Process pods with real processes: a `myc proxy` sidecar and a small app, driven by
the pod's lifecycle against a real controller that lets no anonymous proxy in (so the
sidecar's join token is what opened its stream). The app itself reports what it saw:
its sidecar ready before it started, and still up when its own SIGTERM came."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tests.support.controller import Api, running_controller
from tests.support.hello_pods import hello_manifest
from tests.support.polling import eventually

from mycelium.api.deployment import Deployment
from mycelium.api.loading import load_documents
from mycelium.control.controller import Controller
from mycelium.runtime.node_network import LoopbackBlock
from mycelium.runtime.pod_lifecycle import PodPhase
from mycelium.runtime.pod_network import app_address_for
from mycelium.runtime.pod_placement import LoopbackPlacement
from mycelium.runtime.process_pods import MeshAccess, PodSpec, ProcessPod

MYC = [str(Path(sys.executable).parent / "myc")]
PORT = 8080
# The pod's address comes from a block of loopback addresses claimed as a mesh claims
# one, so that a mesh running meanwhile on this machine (the demo) is never in the way.
BLOCK = LoopbackBlock()
POD_ADDRESS = str(next(BLOCK.claim().hosts()) + 1)
APP_ADDRESS = app_address_for(POD_ADDRESS)


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    async with running_controller(tmp_path / "home", allow_anonymous_proxies=False) as running:
        yield running


async def pod_for(controller: Controller, tmp_path: Path, mode: str) -> ProcessPod:
    text = hello_manifest(
        port=PORT,
        events=tmp_path / "events",
        mode=mode,
        env={"COUNTER_FILE": str(tmp_path / "counter")},
        grace_seconds=5,
    )
    resources = load_documents(text, source="mesh.yaml")
    [deployment] = [r for r in resources if isinstance(r, Deployment)]
    async with aiohttp.ClientSession() as session:
        api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
        status, body = await api.apply(text)
        assert status == 200, body

    async def join_token(spec: PodSpec) -> str:
        return controller.join_tokens.mint(spec.namespace, spec.service_account, 600).token

    mesh = MeshAccess(
        myc=MYC,
        discovery=f"127.0.0.1:{controller.discovery_port}",
        trust_bundle=controller.config.ca_dir / "root.pem",
        join_token=join_token,
    )
    spec = PodSpec.from_deployment(deployment, 0, tmp_path)
    return ProcessPod(
        spec, LoopbackPlacement(POD_ADDRESS, APP_ADDRESS, asyncio.to_thread), mesh, tmp_path / "pod"
    )


def events(tmp_path: Path) -> list[str]:
    path = tmp_path / "events"
    return path.read_text().splitlines() if path.exists() else []


def through_the_sidecar() -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{POD_ADDRESS}:{PORT}/", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


async def test_the_app_starts_after_its_sidecar_and_stops_before_it(
    controller: Controller, tmp_path: Path
) -> None:
    pod = await pod_for(controller, tmp_path, "serve")
    running = asyncio.create_task(pod.run())
    try:
        await eventually(lambda: pod.lifecycle.ready, timeout=20, what="the pod ready")
        assert events(tmp_path) == ["started sidecar=ready"]
        answer = await eventually(
            lambda: asyncio.to_thread(through_the_sidecar), what="the app through its sidecar"
        )
        assert answer == "hello from hello-0\n"
    finally:
        pod.stop()
        phase = await asyncio.wait_for(running, 30)
    assert phase is PodPhase.STOPPED
    # The pod left the mesh first; the app went next, while its sidecar still served.
    assert events(tmp_path)[-1] == "sigterm sidecar=left"


async def test_a_job_completes_and_takes_its_sidecar_with_it(
    controller: Controller, tmp_path: Path
) -> None:
    pod = await pod_for(controller, tmp_path, "job")
    phase = await asyncio.wait_for(pod.run(), 30)
    assert phase is PodPhase.COMPLETED
    assert pod.lifecycle.last_exit == 0
    assert events(tmp_path) == ["started sidecar=ready"]


async def test_a_crashed_app_is_restarted_and_becomes_ready(
    controller: Controller, tmp_path: Path
) -> None:
    pod = await pod_for(controller, tmp_path, "crash-once")
    running = asyncio.create_task(pod.run())
    try:
        await eventually(lambda: pod.lifecycle.ready, timeout=20, what="the restarted app")
        assert pod.lifecycle.restarts == 1
        assert pod.lifecycle.last_exit == 1
        assert "sidecar=ready" in events(tmp_path)[1]
    finally:
        pod.stop()
        await asyncio.wait_for(running, 30)
