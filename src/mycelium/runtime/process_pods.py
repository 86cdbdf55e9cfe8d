"""A pod's processes, driven by its lifecycle: the sidecar (unless the pod opts out)
and the app, wherever the pod's placement puts them (`runtime/pod_placement.py`:
loopback addresses for process pods, a network namespace for netns pods).

`ProcessPod.run()` starts the sidecar, waits until its health port says ready, starts
the app, probes it, restarts it as `PodLifecycle` says, and on `stop()` ends the app
before draining the sidecar. Each process runs in its own session (so a signal reaches
what it started too) and writes to its log under the pod's directory. The sidecar
proves the pod's identity with a join token minted for it, passed in its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mycelium.api.deployment import Container, Deployment, RestartPolicy
from mycelium.runtime import process_records
from mycelium.runtime.pod_lifecycle import (
    Action,
    Join,
    Leave,
    PodLifecycle,
    PodPhase,
    Process,
    Signal,
    Start,
)
from mycelium.runtime.pod_placement import PodPlacement, http_ok, run_probe
from mycelium.telemetry.workload_labels import WORKLOAD_NAME_LABEL

log = logging.getLogger("mycelium.runtime")

READY_POLL_SECONDS = 0.1

type Event = (
    tuple[Literal["sidecar_exited", "app_exited"], int]
    | tuple[Literal["sidecar_ready", "app_ready", "stop"], None]
)


@dataclass(frozen=True, slots=True)
class PodSpec:
    """What one pod runs, taken from its Deployment."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    service_account: str
    container: Container
    restart_policy: RestartPolicy
    grace_seconds: float
    working_dir: Path  # where relative paths in the manifest start
    sidecar: bool = True  # False: the app is a proxy itself (a gateway)
    host_network: bool = False  # in the host's network namespace (an egress gateway)

    @property
    def ports(self) -> list[int]:
        return [port.container_port for port in self.container.ports]

    @classmethod
    def from_deployment(cls, deployment: Deployment, ordinal: int, base_dir: Path) -> PodSpec:
        template = deployment.spec.template
        container = template.spec.containers[0]
        working_dir = Path(container.working_dir) if container.working_dir else Path()
        return cls(
            name=f"{deployment.metadata.name}-{ordinal}",
            namespace=deployment.metadata.namespace,
            # The Deployment, for telemetry's workload labels: a pod's own name changes
            # with every rollout, the workload it belongs to does not.
            labels={**template.metadata.labels, WORKLOAD_NAME_LABEL: deployment.metadata.name},
            service_account=template.spec.service_account_name,
            container=container,
            restart_policy=template.spec.restart_policy,
            grace_seconds=float(template.spec.termination_grace_period_seconds),
            working_dir=base_dir / working_dir,
            sidecar=template.metadata.wants_sidecar,
            host_network=template.spec.host_network,
        )


@dataclass(frozen=True, slots=True)
class MeshAccess:
    """How a sidecar finds the mesh: the `myc` program and the controller."""

    myc: list[str]
    discovery: str  # HOST:PORT
    trust_bundle: Path
    join_token: Callable[[PodSpec], Awaitable[str | None]] | None = None


def app_environment(
    spec: PodSpec,
    placement: PodPlacement,
    mesh: MeshAccess,
    base: Mapping[str, str],
    join_token: str | None = None,
) -> dict[str, str]:
    """The app's environment: the runtime's own (PATH and the like), what reaches the
    mesh, then the manifest's variables, which win.

    Proxy settings the runtime inherited (a corporate proxy, a no_proxy of "*") would
    send the app's calls around its sidecar: none of them passes. The admin token and
    other MYC_ settings of the runtime are not the app's either."""
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith("MYC_") and not k.lower().endswith("_proxy")
    }
    # `myc` itself is where the runtime's is, for apps (gateways) that run it.
    myc_dir = str(Path(mesh.myc[0]).parent)
    env["PATH"] = os.pathsep.join([myc_dir, env["PATH"]]) if env.get("PATH") else myc_dir
    env.update(
        MYC_POD_NAME=spec.name,
        MYC_POD_NAMESPACE=spec.namespace,
        MYC_POD_ADDRESS=placement.address,
        # Without a sidecar the app is what peers reach: it listens on the pod's address.
        MYC_APP_ADDRESS=placement.app_address if spec.sidecar else placement.address,
    )
    if spec.sidecar:
        env.update(placement.mesh_environment())
    else:
        # No sidecar: the app joins the mesh itself (`myc gateway` reads these).
        env.update(
            MYC_SERVICE_ACCOUNT=spec.service_account,
            MYC_POD_LABELS=",".join(f"{k}={v}" for k, v in sorted(spec.labels.items())),
            MYC_DISCOVERY=mesh.discovery,
            MYC_TRUST_BUNDLE=str(mesh.trust_bundle),
        )
        if join_token:
            env["MYC_JOIN_TOKEN"] = join_token
        if placement.advertise_address is not None:
            # Bound on one address, reached by pods at another (a hostNetwork pod).
            env["MYC_ADVERTISE_ADDRESS"] = placement.advertise_address
        if placement.metrics_address is not None:
            # Scraped from the host through the node agent's forward (a netns pod).
            env["MYC_METRICS_ADVERTISE"] = placement.metrics_address
        if base.get("MYC_CLUSTER"):  # the mesh's cluster name, as sidecars get it
            env["MYC_CLUSTER"] = base["MYC_CLUSTER"]
    env.update({var.name: var.value for var in spec.container.env})
    return env


@dataclass(slots=True)
class ProcessPod:
    spec: PodSpec
    placement: PodPlacement
    mesh: MeshAccess
    log_dir: Path
    # Called after every event the pod handled (ready, an exit, a restart...): how the
    # node agent learns, without polling, that its view of the pod may have changed.
    on_change: Callable[[], None] | None = None
    lifecycle: PodLifecycle = field(init=False)
    _events: asyncio.Queue[Event] = field(init=False, default_factory=asyncio.Queue)
    _processes: dict[Process, asyncio.subprocess.Process] = field(init=False, default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.lifecycle = PodLifecycle(
            restart_policy=self.spec.restart_policy,
            grace_seconds=self.spec.grace_seconds,
            sidecar=self.spec.sidecar,
        )

    def stop(self) -> None:
        self._events.put_nowait(("stop", None))

    async def run(self) -> PodPhase:
        """Run the pod until it completes, fails or is stopped; its final phase."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pod = self.lifecycle
        try:
            await self._carry_out(pod.begin(_now()))
            while not pod.done:
                timeout = None if pod.wake_at is None else max(0.0, pod.wake_at - _now())
                try:
                    event = await asyncio.wait_for(self._events.get(), timeout)
                except TimeoutError:
                    await self._carry_out(pod.tick(_now()))
                else:
                    await self._carry_out(self._handle(event))
                if self.on_change is not None:
                    self.on_change()
        finally:
            for task in self._tasks:
                task.cancel()
            for process in self._processes.values():
                if process.returncode is None:
                    _signal(process, signal.SIGKILL)
        return pod.phase

    def _handle(self, event: Event) -> list[Action]:
        pod, now = self.lifecycle, _now()
        kind, code = event
        if kind == "sidecar_ready":
            return pod.sidecar_ready(now)
        if kind == "app_ready":
            log.info("pod %s/%s is ready", self.spec.namespace, self.spec.name)
            return pod.app_ready(now)
        if kind == "stop":
            return pod.stop(now)
        assert code is not None
        if kind == "app_exited":
            return pod.app_exited(code, now)
        return pod.sidecar_exited(code, now)

    async def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Join | Leave):
                self._spawn(self._tell_sidecar(action))
            elif isinstance(action, Start):
                await self._start(action.process)
            elif isinstance(action, Signal):
                process = self._processes.get(action.process)
                if process is not None and process.returncode is None:
                    _signal(process, signal.SIGKILL if action.kill else signal.SIGTERM)

    async def _start(self, which: Process) -> None:
        spec, placement = self.spec, self.placement
        if which == "sidecar":
            argv = placement.wrap(placement.sidecar_argv(spec, self.mesh))
            env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
            token = await self._join_token()
            if token:
                env["MYC_JOIN_TOKEN"] = token  # a secret: never on the command line
            cwd = None
        else:
            argv = placement.wrap([*spec.container.command, *spec.container.args])
            token = None if spec.sidecar else await self._join_token()
            env = app_environment(spec, placement, self.mesh, os.environ, token)
            cwd = spec.working_dir
        # Opening a local log file is quick; the child writes to it directly.
        with open(self.log_dir / f"{which}.log", "ab") as output:  # noqa: ASYNC230
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                # A command that cannot start is an exit like any other: 127, as a shell says.
                output.write(f"mycelium: cannot start {argv[0]}: {exc.strerror}\n".encode())
                self._events.put_nowait((f"{which}_exited", 127))  # type: ignore[arg-type]
                return
        self._processes[which] = process
        process_records.record(self.log_dir, which, process.pid)  # for a crashed agent's heir
        self._spawn(self._watch(which, process))
        if which == "sidecar":
            self._spawn(self._wait_ready(self._sidecar_ready, process, "sidecar_ready"))
        else:
            self._spawn(self._wait_ready(self._app_ready, process, "app_ready"))

    async def _join_token(self) -> str | None:
        if self.mesh.join_token is None:
            return None
        return await self.mesh.join_token(self.spec)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, which: Process, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        process_records.forget(self.log_dir, which)
        self._events.put_nowait((f"{which}_exited", code))  # type: ignore[arg-type]

    async def _wait_ready(
        self,
        check: Callable[[], Awaitable[bool]],
        process: asyncio.subprocess.Process,
        event: Literal["sidecar_ready", "app_ready"],
    ) -> None:
        probe = self.spec.container.readiness_probe
        if event == "app_ready" and probe is not None and probe.initial_delay_seconds:
            await asyncio.sleep(probe.initial_delay_seconds)
        period = READY_POLL_SECONDS
        if event == "app_ready" and probe is not None:
            period = float(probe.period_seconds)
        while process.returncode is None:
            if await check():
                if process.returncode is None:
                    self._events.put_nowait((event, None))
                return
            await asyncio.sleep(period)

    async def _tell_sidecar(self, action: Join | Leave) -> None:
        """Join or leave the mesh through the sidecar's admin port. Best effort: a
        sidecar that does not answer is stopped all the same (after a leave's wait),
        and one that never joined is simply never sent traffic."""
        what = "join" if isinstance(action, Join) else "leave"
        url = f"{self.placement.sidecar_admin_url}/{what}"
        if not await self.placement.run_blocking(http_ok, url, 2.0, "POST"):
            log.warning(
                "pod %s/%s: its sidecar did not %s the mesh",
                self.spec.namespace,
                self.spec.name,
                what,
            )

    async def _sidecar_ready(self) -> bool:
        return await self.placement.run_blocking(http_ok, self.placement.sidecar_health_url, 1.0)

    async def _app_ready(self) -> bool:
        probe = self.spec.container.readiness_probe
        if probe is None:
            return True
        # An app behind a sidecar listens where the pod's checks reach it; a pod
        # without one (a gateway) serves on the pod's own address.
        host = self.placement.check_host if self.spec.sidecar else self.placement.address
        return await run_probe(probe, self.placement, host, self.spec.working_dir)


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _now() -> float:
    return time.monotonic()
