"""Process pods: a pod's sidecar and app as real processes, driven by its lifecycle.

A process pod has two loopback addresses: the pod's (its sidecar serves the workload's
ports there, and binds its outbound, admin and health ports there too, so pods never
clash on a port), and the app's, where the app listens. The app learns them from its
environment: `MYC_APP_ADDRESS` (bind here), `MYC_POD_ADDRESS`, and `HTTP_PROXY`
pointing at its sidecar's outbound port, so that calls by service name go through the
mesh. (netns pods will give the app the pod's namespace instead; see netns_pods.)

`ProcessPod.run()` starts the sidecar, waits until its health port says ready, starts
the app, probes it, restarts it as `PodLifecycle` says, and on `stop()` ends the app
before draining the sidecar. Each process runs in its own session (so a signal reaches
what it started too) and writes to its log under the pod's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mycelium.api.deployment import Container, Deployment, Probe, RestartPolicy
from mycelium.runtime.pod_lifecycle import (
    Action,
    PodLifecycle,
    PodPhase,
    Process,
    Signal,
    Start,
)
from mycelium.runtime.pod_network import ADMIN_PORT, HEALTH_PORT, OUTBOUND_PORT

log = logging.getLogger("mycelium.runtime")

READY_POLL_SECONDS = 0.1
SIDECAR_DRAIN_SECONDS = 5.0

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

    @classmethod
    def from_deployment(cls, deployment: Deployment, ordinal: int, base_dir: Path) -> PodSpec:
        template = deployment.spec.template
        container = template.spec.containers[0]
        working_dir = Path(container.working_dir) if container.working_dir else Path()
        return cls(
            name=f"{deployment.metadata.name}-{ordinal}",
            namespace=deployment.metadata.namespace,
            labels=dict(template.metadata.labels),
            service_account=template.spec.service_account_name,
            container=container,
            restart_policy=template.spec.restart_policy,
            grace_seconds=float(template.spec.termination_grace_period_seconds),
            working_dir=base_dir / working_dir,
        )


@dataclass(frozen=True, slots=True)
class PodAddresses:
    pod: str  # where peers reach the pod: its sidecar
    app: str  # where the app listens


@dataclass(frozen=True, slots=True)
class MeshAccess:
    """How a sidecar finds the mesh: the `myc` program and the controller."""

    myc: list[str]
    discovery: str  # HOST:PORT
    trust_bundle: Path
    join_token: Callable[[PodSpec], Awaitable[str | None]] | None = None


def sidecar_argv(spec: PodSpec, addresses: PodAddresses, mesh: MeshAccess) -> list[str]:
    argv = [
        *mesh.myc,
        "proxy",
        "--id",
        f"{spec.namespace}.{spec.name}",
        "--namespace",
        spec.namespace,
        "--workload",
        spec.name,
        "--service-account",
        spec.service_account,
        "--address",
        addresses.pod,
        "--inbound-address",
        addresses.pod,
        "--app-address",
        addresses.app,
        "--outbound",
        f"{addresses.pod}:{OUTBOUND_PORT}",
        "--admin",
        f"{addresses.pod}:{ADMIN_PORT}",
        "--health",
        f"{addresses.pod}:{HEALTH_PORT}",
        "--discovery",
        mesh.discovery,
        "--trust-bundle",
        str(mesh.trust_bundle),
        "--drain-seconds",
        str(SIDECAR_DRAIN_SECONDS),
    ]
    for key, value in sorted(spec.labels.items()):
        argv += ["--label", f"{key}={value}"]
    for port in spec.container.ports:
        argv += ["--port", str(port.container_port)]
    return argv


def app_environment(
    spec: PodSpec, addresses: PodAddresses, base: Mapping[str, str]
) -> dict[str, str]:
    """The app's environment: the runtime's own (PATH and the like), what reaches the
    mesh, then the manifest's variables, which win."""
    proxy = f"http://{addresses.pod}:{OUTBOUND_PORT}"
    # Proxy settings the runtime inherited (a corporate proxy, a no_proxy of "*") would
    # send the app's calls around its sidecar: none of them passes.
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith("MYC_") and not k.lower().endswith("_proxy")
    }
    env.update(
        MYC_POD_NAME=spec.name,
        MYC_POD_NAMESPACE=spec.namespace,
        MYC_POD_ADDRESS=addresses.pod,
        MYC_APP_ADDRESS=addresses.app,
        HTTP_PROXY=proxy,
        http_proxy=proxy,
        NO_PROXY="",
        no_proxy="",
    )
    env.update({var.name: var.value for var in spec.container.env})
    return env


@dataclass(slots=True)
class ProcessPod:
    spec: PodSpec
    addresses: PodAddresses
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
            restart_policy=self.spec.restart_policy, grace_seconds=self.spec.grace_seconds
        )

    def stop(self) -> None:
        self._events.put_nowait(("stop", None))

    async def run(self) -> PodPhase:
        """Run the pod until it completes, fails or is stopped; its final phase."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pod = self.lifecycle
        try:
            await self._carry_out(pod.begin())
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
            pod.app_ready()
            log.info("pod %s/%s is ready", self.spec.namespace, self.spec.name)
            return []
        if kind == "stop":
            return pod.stop(now)
        assert code is not None
        if kind == "app_exited":
            return pod.app_exited(code, now)
        return pod.sidecar_exited(code, now)

    async def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Start):
                await self._start(action.process)
            elif isinstance(action, Signal):
                process = self._processes.get(action.process)
                if process is not None and process.returncode is None:
                    _signal(process, signal.SIGKILL if action.kill else signal.SIGTERM)

    async def _start(self, which: Process) -> None:
        spec = self.spec
        if which == "sidecar":
            argv = sidecar_argv(spec, self.addresses, self.mesh)
            env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
            if self.mesh.join_token is not None:
                token = await self.mesh.join_token(spec)
                if token:
                    env["MYC_JOIN_TOKEN"] = token  # a secret: never on the command line
            cwd = None
        else:
            argv = [*spec.container.command, *spec.container.args]
            env = app_environment(spec, self.addresses, os.environ)
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
        self._spawn(self._watch(which, process))
        if which == "sidecar":
            self._spawn(self._wait_ready(self._sidecar_ready, process, "sidecar_ready"))
        else:
            self._spawn(self._wait_ready(self._app_ready, process, "app_ready"))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, which: Process, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
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

    async def _sidecar_ready(self) -> bool:
        url = f"http://{self.addresses.pod}:{HEALTH_PORT}/healthz/ready"
        return await _http_ok(url, 1.0)

    async def _app_ready(self) -> bool:
        probe = self.spec.container.readiness_probe
        if probe is None:
            return True
        return await run_probe(probe, self.addresses.app, self.spec.working_dir)


async def run_probe(probe: Probe, address: str, working_dir: Path) -> bool:
    """One readiness check: an HTTP GET answering 2xx/3xx, a TCP connect, or a command
    exiting 0, within the probe's timeout."""
    timeout = float(probe.timeout_seconds)
    if probe.http_get is not None:
        url = f"http://{address}:{probe.http_get.port}{probe.http_get.path}"
        return await _http_ok(url, timeout)
    if probe.tcp_socket is not None:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(address, probe.tcp_socket.port), timeout
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True
    assert probe.exec is not None
    try:
        process = await asyncio.create_subprocess_exec(
            *probe.exec.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=working_dir,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(process.wait(), timeout) == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return False


async def _http_ok(url: str, timeout: float) -> bool:
    def get() -> bool:
        # Straight to the address: a proxy from the environment must not take this.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=timeout) as response:
                status: int = response.status
                return 200 <= status < 400
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return await asyncio.to_thread(get)


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _now() -> float:
    return time.monotonic()
