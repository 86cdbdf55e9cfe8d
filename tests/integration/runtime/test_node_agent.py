"""The node agent against a real controller: Deployments applied through the API become
running process pods (each sidecar proving its identity with a token the agent minted),
follow a scale and a new template one pod at a time, and all stop when the agent does.
`pods.json` says at every step what `myc ps` will show."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tests.support.controller import Api, running_controller
from tests.support.hello_pods import hello_manifest
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.runtime.node_agent import ControllerApi, NodeAgent
from mycelium.runtime.process_pods import MeshAccess, PodSpec

MYC = [str(Path(sys.executable).parent / "myc")]
PORT = 8080


class Mesh:
    def __init__(self, controller: Controller, tmp_path: Path) -> None:
        self.controller = controller
        self.tmp_path = tmp_path

    async def apply(self, replicas: int, greeting: str = "hi") -> None:
        text = hello_manifest(
            port=PORT,
            events=self.tmp_path / "events",
            replicas=replicas,
            env={"GREETING": greeting},
            grace_seconds=5,
        )
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.controller.api_port}"
            status, body = await Api(url, self.controller.admin_token, session).apply(text)
            assert status == 200, body


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    async with running_controller(tmp_path / "home", allow_anonymous_proxies=False) as running:
        yield Mesh(running, tmp_path)


def listed(state_dir: Path) -> list[dict[str, object]]:
    path = state_dir / "pods.json"
    return json.loads(path.read_text())["pods"] if path.exists() else []


def answer(address: str) -> str | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}:{PORT}/", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def agent_for(mesh: Mesh, tmp_path: Path) -> tuple[NodeAgent, ControllerApi, Path]:
    controller = mesh.controller
    api = ControllerApi(f"http://127.0.0.1:{controller.api_port}", controller.admin_token)

    async def join_token(spec: PodSpec) -> str:
        return await api.join_token(spec.namespace, spec.service_account)

    state = tmp_path / "state"
    agent = NodeAgent(
        api,
        MeshAccess(
            myc=MYC,
            discovery=f"127.0.0.1:{controller.discovery_port}",
            trust_bundle=controller.config.ca_dir / "root.pem",
            join_token=join_token,
        ),
        state_dir=state,
        manifest_dir=tmp_path,
    )
    return agent, api, state


async def test_deployments_become_pods_that_scale_roll_and_stop(mesh: Mesh, tmp_path: Path) -> None:
    agent, api, state = agent_for(mesh, tmp_path)
    await mesh.apply(replicas=2)
    running = asyncio.create_task(agent.run())
    try:

        def ready_pods() -> list[dict[str, object]]:
            return [p for p in listed(state) if p["ready"]]

        await eventually(lambda: len(ready_pods()) == 2, timeout=30, what="two ready pods")
        first = {str(p["name"]) for p in listed(state)}
        address = str(ready_pods()[0]["address"])
        reply = await eventually(
            lambda: asyncio.to_thread(answer, address), what="a pod through its sidecar"
        )
        assert reply is not None
        assert reply.startswith("hello from hello-")

        await mesh.apply(replicas=1)
        await eventually(lambda: len(listed(state)) == 1, timeout=30, what="scaled to one")
        assert {str(p["name"]) for p in listed(state)} < first  # one of the two stayed

        # A new template: the new pod is ready before the old one goes.
        seen_ready: list[int] = []

        async def rolled() -> bool:
            pods = listed(state)
            seen_ready.append(sum(bool(p["ready"]) for p in pods))
            return len(pods) == 1 and bool(pods[0]["ready"]) and str(pods[0]["name"]) not in first

        await mesh.apply(replicas=1, greeting="hello again")
        await eventually(rolled, timeout=40, what="the new template rolled out")
        assert min(seen_ready) >= 1  # never without a ready pod
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await api.close()
    assert listed(state) == []  # every pod stopped with the agent


async def test_pods_of_an_ambient_namespace_get_no_sidecar(mesh: Mesh, tmp_path: Path) -> None:
    agent, api, state = agent_for(mesh, tmp_path)
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{mesh.controller.api_port}"
        namespace = "apiVersion: mycelium.io/v1\nkind: Namespace\nmetadata: {name: default}\n"
        status, body = await Api(url, mesh.controller.admin_token, session).apply(
            namespace + "spec: {mode: ambient}\n"
        )
        assert status == 200, body
    await mesh.apply(replicas=1)
    running = asyncio.create_task(agent.run())
    try:
        [pod] = await eventually(
            lambda: [p for p in listed(state) if p["ready"]], timeout=30, what="a ready pod"
        )
        logs = state / "pods" / "default" / str(pod["name"])
        assert (logs / "app.log").exists()
        assert not (logs / "sidecar.log").exists()  # the node's ztunnel's job, not a sidecar's
        # Without a sidecar the app serves on the pod's own address.
        assert await asyncio.to_thread(answer, str(pod["address"])) is not None
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await api.close()
