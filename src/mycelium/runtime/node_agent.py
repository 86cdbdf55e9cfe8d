"""The node agent: keeps this machine's pods matching the Deployments the controller holds.

Like a kubelet with its Deployment controller folded in. It reads Deployments (and
Services, for the names pods resolve) through the controller's REST API with the admin
token, asks `reconcile` for the next steps, and carries them out: each `CreatePod` gets
a place on the node's network (`runtime/node_network.py`: loopback addresses, or a
network namespace) and a `ProcessPod` task (its sidecar proves the pod's identity with
a join token the agent mints); each `StopPod` stops its pod (app first, then the
sidecar drains), and the pod's network goes once its last process has. It asks again
after each pod event (turning ready, exiting, ending) and after reading the resources,
which it does every `POLL_SECONDS` (a one-machine mesh has few of them; the REST watch
would cut the delay, not the work).

A container port with a `hostPort` is published on the host's 127.0.0.1: the agent
forwards each connection to a ready pod of its Deployment, in turn.

What it knows of its pods is written to `<state dir>/pods.json` after every change, for
`myc ps`; each pod's logs are under `<state dir>/pods/<namespace>/<pod>/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from mycelium.api.deployment import Deployment
from mycelium.api.service import Service
from mycelium.net.netns import InNamespace
from mycelium.runtime import process_records
from mycelium.runtime.node_network import LoopbackNode, NodeNetwork, ServiceName
from mycelium.runtime.pod_lifecycle import PodPhase
from mycelium.runtime.port_forward import PortForward, PortForwardError
from mycelium.runtime.process_pods import MeshAccess, PodSpec, ProcessPod
from mycelium.runtime.reconcile import CreatePod, PodView, StopPod, reconcile

log = logging.getLogger("mycelium.runtime.agent")

POLL_SECONDS = 1.0


class ControllerApi:
    """The few REST calls the agent makes (admin token)."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=10)
            )
        return self._session

    async def deployments(self) -> list[Deployment]:
        found = []
        for item in await self._resources("Deployment"):
            try:
                found.append(Deployment.model_validate(item))
            except ValueError as exc:  # stored by an older release, say: skip, say why
                log.error("cannot run a stored Deployment: %s", exc)
        return found

    async def ambient_namespaces(self) -> set[str]:
        """Namespaces whose pods get no sidecar (the node's ztunnel serves them)."""
        found = set()
        for item in await self._resources("Namespace"):
            if (item.get("spec") or {}).get("mode") == "ambient":
                found.add(str(item["metadata"]["name"]))
        return found

    async def service_names(self) -> list[ServiceName]:
        """(virtual IP, name, namespace, hosts) of every Service that has a virtual IP."""
        names = []
        for item in await self._resources("Service"):
            try:
                service = Service.model_validate(item)
            except ValueError:
                continue
            if service.spec.vip is not None:
                meta = service.metadata
                hosts = tuple(service.spec.hosts)
                names.append((str(service.spec.vip), meta.name, meta.namespace, hosts))
        return sorted(names, key=lambda n: (n[2] != "default", n[2], n[1]))

    async def _resources(self, kind: str) -> list[dict[str, Any]]:
        url = f"{self._base}/api/v1/resources"
        async with self._open().get(url, params={"kind": kind}) as response:
            response.raise_for_status()
            body = await response.json()
        items: list[dict[str, Any]] = body["items"]
        return items

    async def join_token(self, namespace: str, service_account: str) -> str:
        url = f"{self._base}/api/v1/join-tokens"
        body = {"namespace": namespace, "serviceAccount": service_account, "ttlSeconds": 600}
        async with self._open().post(url, json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        return str(answer["token"])


@dataclass(slots=True)
class _Pod:
    view: PodView
    runner: ProcessPod
    task: asyncio.Task[PodPhase]


@dataclass(slots=True)
class NodeAgent:
    api: ControllerApi
    mesh: MeshAccess
    state_dir: Path
    manifest_dir: Path = field(default_factory=Path.cwd)
    node: NodeNetwork = None  # type: ignore[assignment]  # LoopbackNode unless given
    pods: dict[str, _Pod] = field(default_factory=dict)
    host_ports: dict[int, PortForward] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    _turn: int = 0  # which ready pod the next host-port connection goes to
    _ambient: set[str] = field(default_factory=set)
    _host: InNamespace = field(default_factory=InNamespace)

    def __post_init__(self) -> None:
        if self.node is None:
            self.node = LoopbackNode(self.mesh.discovery)

    async def run(self) -> None:
        """Reconcile until cancelled; then stop every pod (app first) and wait."""
        # An agent that was killed left its pods' processes running: stop them before
        # their addresses are handed out again.
        orphans = process_records.stop_orphans(self.state_dir / "pods")
        if orphans:
            log.warning("stopped %d processes an earlier agent left running", len(orphans))
        await self.node.start()
        try:
            while True:
                await self.reconcile_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), POLL_SECONDS)
                self._changed.clear()
        finally:
            await self.stop_all()
            await self.node.stop()
            self._host.close()

    async def reconcile_once(self) -> None:
        try:
            deployments = await self.api.deployments()
            self.node.set_service_names(await self.api.service_names())
            self._ambient = await self.api.ambient_namespaces()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot read Deployments from the controller: %s", exc)
            return
        self._deployments = {(d.metadata.namespace, d.metadata.name): d for d in deployments}
        views = [self._view(pod) for pod in self.pods.values()]
        for step in reconcile(deployments, views):
            if isinstance(step, CreatePod):
                self._create(step)
            elif isinstance(step, StopPod):
                self._stop(step)
        self._forget_stopped()
        await self._publish_host_ports()
        self.write_state()

    async def stop_all(self) -> None:
        for forward in self.host_ports.values():
            await forward.stop()
        self.host_ports.clear()
        for pod in self.pods.values():
            pod.runner.stop()
        await asyncio.gather(*(pod.task for pod in self.pods.values()), return_exceptions=True)
        self.pods.clear()
        self.write_state()

    # --- steps --------------------------------------------------------------------------

    def _create(self, step: CreatePod) -> None:
        deployment = self._deployments[(step.namespace, step.deployment)]
        spec = PodSpec.from_deployment(deployment, step.ordinal, self.manifest_dir)
        # Sidecars go into pods of sidecar-mode namespaces only, unless a pod opts out.
        spec = replace(
            spec, name=step.name, sidecar=spec.sidecar and step.namespace not in self._ambient
        )
        placement = self.node.plan(step.name, spec.sidecar, spec.host_network, spec.ports)
        runner = ProcessPod(
            spec,
            placement,
            self.mesh,
            self.state_dir / "pods" / step.namespace / step.name,
            on_change=self._changed.set,
        )
        task = asyncio.create_task(self._run_pod(runner))
        view = PodView(step.name, step.namespace, step.deployment, step.template_hash, step.ordinal)
        self.pods[step.name] = _Pod(view, runner, task)
        task.add_done_callback(self._pod_ended)
        log.info("starting pod %s/%s at %s", step.namespace, step.name, placement.address)

    async def _run_pod(self, runner: ProcessPod) -> PodPhase:
        """The pod's network around its processes' life: made before, removed after."""
        try:
            await self.node.prepare(runner.placement, runner.spec.sidecar)
            return await runner.run()
        finally:
            await self.node.release(runner.spec.name)

    def _pod_ended(self, task: asyncio.Task[PodPhase]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("a pod's runner failed: %r", task.exception())
        self._changed.set()

    def _stop(self, step: StopPod) -> None:
        pod = self.pods.get(step.name)
        if pod is None:
            return
        log.info("stopping pod %s/%s: %s", step.namespace, step.name, step.why)
        pod.view = replace(pod.view, stopping=True)
        pod.runner.stop()

    def _view(self, pod: _Pod) -> PodView:
        return replace(pod.view, ready=pod.runner.lifecycle.ready, ended=_ended_for_good(pod))

    def _forget_stopped(self) -> None:
        """Pods we stopped, and pods that failed in a way their Deployment does not
        accept (a sidecar that died), leave the listing; the next round replaces the
        latter. A completed job stays, as what it ended as."""
        for name, pod in list(self.pods.items()):
            if pod.task.done() and not _ended_for_good(pod):
                del self.pods[name]

    # --- host ports -----------------------------------------------------------------------

    async def _publish_host_ports(self) -> None:
        wanted: dict[int, tuple[tuple[str, str], int]] = {}
        for key, deployment in self._deployments.items():
            for port in deployment.spec.container.ports:
                if port.host_port is not None:
                    wanted[port.host_port] = (key, port.container_port)
        for host_port in set(self.host_ports) - set(wanted):
            await self.host_ports.pop(host_port).stop()
        for host_port, (key, container_port) in wanted.items():
            if host_port in self.host_ports:
                continue
            forward = PortForward(
                ("127.0.0.1", host_port),
                self._ready_pod_picker(key, container_port),
                listen_in=self._host,
                connect_in=self.node.connect_from,
            )
            try:
                await forward.start()
            except PortForwardError as exc:
                log.error("cannot publish host port %d: %s", host_port, exc)
                continue
            self.host_ports[host_port] = forward

    def _ready_pod_picker(
        self, deployment: tuple[str, str], port: int
    ) -> Callable[[], tuple[str, int] | None]:
        def pick() -> tuple[str, int] | None:
            ready = [
                pod.runner.placement.address
                for pod in self.pods.values()
                if (pod.view.namespace, pod.view.deployment) == deployment
                and pod.runner.lifecycle.ready
                and not pod.view.stopping
            ]
            if not ready:
                return None
            self._turn += 1
            return ready[self._turn % len(ready)], port

        return pick

    # --- state for `myc ps` ---------------------------------------------------------------

    def write_state(self) -> None:
        rows: list[dict[str, Any]] = []
        for name, pod in sorted(self.pods.items()):
            lifecycle = pod.runner.lifecycle
            rows.append(
                {
                    "name": name,
                    "namespace": pod.view.namespace,
                    "deployment": pod.view.deployment,
                    "phase": str(lifecycle.phase),
                    "ready": lifecycle.ready,
                    "restarts": lifecycle.restarts,
                    "address": pod.runner.placement.address,
                    "app_address": pod.runner.placement.app_address,
                    "netns": getattr(pod.runner.placement, "netns", None),
                    "reason": lifecycle.reason,
                }
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_dir / "pods.json.tmp"
        temporary.write_text(json.dumps({"pods": rows}, indent=2) + "\n")
        temporary.replace(self.state_dir / "pods.json")


def _ended_for_good(pod: _Pod) -> bool:
    """Ended by itself in a way its Deployment keeps: a completed job, or a failure
    under restartPolicy Never."""
    if not pod.task.done() or pod.view.stopping or pod.task.cancelled():
        return False
    if pod.task.exception() is not None:
        return False
    phase = pod.runner.lifecycle.phase
    never = pod.runner.spec.restart_policy == "Never"
    return phase is PodPhase.COMPLETED or (
        phase is PodPhase.FAILED
        and never
        and pod.runner.lifecycle.last_exit is not None
        and "sidecar" not in pod.runner.lifecycle.reason
    )
