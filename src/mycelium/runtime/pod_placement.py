"""Where a pod's processes run, and how the runtime reaches them: the one difference
between process pods and netns pods.

- `LoopbackPlacement` (process pods, no root): the pod has two loopback addresses. Its
  sidecar serves the workload's ports on the pod's address and binds its outbound,
  admin and health ports there too, so pods never clash on a port; the app listens on
  the app's address (`MYC_APP_ADDRESS`) and reaches the mesh through `HTTP_PROXY`.
  A pod with `hostNetwork` on a netns node is placed this way too, on the host, and
  `advertise_address` says where the other pods reach it (the node's bridge address).
- `NetnsPlacement` (root): the pod is a network namespace (`runtime/netns_pods.py`).
  Its processes run under `ip netns exec`, which also gives them the pod's /etc/hosts;
  the sidecar runs in transparent mode (nftables sends the pod's TCP to it), the app
  listens on the pod's loopback, and probes run inside the namespace, so that a check
  of the app never goes through the sidecar (whose mTLS policy may refuse it).

A pod without a sidecar (a gateway) gets what it needs to join the mesh itself in its
environment: its identity, its address, the controller's discovery address, the trust
bundle and a join token (`MYC_*`, the contract `myc gateway` reads).
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mycelium import ports
from mycelium.api.deployment import Probe

T = TypeVar("T")

SIDECAR_DRAIN_SECONDS = 5.0
# Settings for every sidecar, set in the runtime's environment (`myc up`) and passed on
# as options, since a sidecar inherits no MYC_ variable: tracing (docs/tracing.md) and
# the cluster's name in the metrics (docs/observability.md).
SIDECAR_OPTIONS = {
    "MYC_TRACE_COLLECTOR": "--trace-collector",
    "MYC_TRACE_SAMPLING": "--trace-sampling",
    "MYC_CLUSTER": "--cluster",
}


class PodIdentity(Protocol):
    """What a placement needs to know about the pod (`process_pods.PodSpec`)."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def service_account(self) -> str: ...

    @property
    def ports(self) -> list[int]: ...


class BlockingRunner(Protocol):
    """Runs a blocking call somewhere (a thread, a thread inside a namespace)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


class MeshEndpoints(Protocol):
    """How a pod's processes reach the mesh (`process_pods.MeshAccess`)."""

    @property
    def myc(self) -> list[str]: ...

    @property
    def discovery(self) -> str:
        """The controller's discovery address (HOST:PORT) as the pod sees it."""
        ...

    @property
    def trust_bundle(self) -> Path: ...


class PodPlacement(Protocol):
    @property
    def address(self) -> str:
        """Where peers reach the pod (its sidecar, or its only process)."""
        ...

    @property
    def app_address(self) -> str:
        """Where the app listens, as the pod sees it."""
        ...

    @property
    def advertise_address(self) -> str | None:
        """Where other pods reach it when that is not `address` (a hostNetwork pod,
        through a port forward), else None."""
        ...

    @property
    def metrics_address(self) -> str | None:
        """HOST:PORT where the host reaches its proxy's metrics, when not at `address`
        (a netns pod, through the agent's forward), else None."""
        ...

    def wrap(self, argv: list[str]) -> list[str]:
        """The command line that runs `argv` as one of the pod's processes."""
        ...

    def sidecar_argv(self, pod: PodIdentity, mesh: MeshEndpoints) -> list[str]:
        """The pod's sidecar (`myc proxy ...`), before `wrap`."""
        ...

    def mesh_environment(self) -> dict[str, str]:
        """What the app of a pod *with* a sidecar needs to reach the mesh through it."""
        ...

    def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        """Run a blocking check where the pod's processes are (its network)."""
        ...

    @property
    def check_host(self) -> str:
        """The app's address as seen by `run_blocking` checks."""
        ...

    @property
    def sidecar_health_url(self) -> str: ...

    @property
    def sidecar_admin_url(self) -> str:
        """As `run_blocking` checks reach it."""
        ...


def _sidecar_argv_common(pod: PodIdentity, mesh: MeshEndpoints) -> list[str]:
    argv = [
        *mesh.myc,
        "proxy",
        "--id",
        f"{pod.namespace}.{pod.name}",
        "--namespace",
        pod.namespace,
        "--workload",
        pod.name,
        "--service-account",
        pod.service_account,
        "--discovery",
        mesh.discovery,
        "--trust-bundle",
        str(mesh.trust_bundle),
        "--drain-seconds",
        str(SIDECAR_DRAIN_SECONDS),
        # registered once the app is ready (the lifecycle's Join), not at start
        "--wait-for-join",
    ]
    for key, value in sorted(pod.labels.items()):
        argv += ["--label", f"{key}={value}"]
    for port in pod.ports:
        argv += ["--port", str(port)]
    for variable, option in SIDECAR_OPTIONS.items():
        setting = os.environ.get(variable)
        if setting:
            argv += [option, setting]
    return argv


@dataclass(frozen=True, slots=True)
class LoopbackPlacement:
    address: str
    app_address: str
    runner: BlockingRunner
    advertise_address: str | None = None  # a hostNetwork pod of a netns node
    metrics_address: str | None = None  # its metrics are on `address`, reached directly

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def sidecar_argv(self, pod: PodIdentity, mesh: MeshEndpoints) -> list[str]:
        return [
            *_sidecar_argv_common(pod, mesh),
            "--address",
            self.address,
            "--inbound-address",
            self.address,
            "--app-address",
            self.app_address,
            "--outbound",
            f"{self.address}:{ports.OUTBOUND}",
            "--admin",
            f"{self.address}:{ports.ADMIN}",
            "--health",
            f"{self.address}:{ports.HEALTH}",
            "--metrics",
            f"{self.address}:{ports.METRICS}",
        ]

    def mesh_environment(self) -> dict[str, str]:
        proxy = f"http://{self.address}:{ports.OUTBOUND}"
        return {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}

    def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        return self.runner(fn, *args)

    @property
    def check_host(self) -> str:
        return self.app_address

    @property
    def sidecar_health_url(self) -> str:
        return f"http://{self.address}:{ports.HEALTH}/healthz/ready"

    @property
    def sidecar_admin_url(self) -> str:
        return f"http://{self.address}:{ports.ADMIN}"


@dataclass(frozen=True, slots=True)
class NetnsPlacement:
    address: str
    netns: str
    ip_command: str
    runner: BlockingRunner  # runs inside the pod's namespace
    app_address: str = "127.0.0.1"
    advertise_address: str | None = None
    # the host has no route into the pod: the agent forwards this host address to it
    metrics_address: str | None = None

    def wrap(self, argv: list[str]) -> list[str]:
        return [self.ip_command, "netns", "exec", self.netns, *argv]

    def sidecar_argv(self, pod: PodIdentity, mesh: MeshEndpoints) -> list[str]:
        advertise = ["--metrics-advertise", self.metrics_address] if self.metrics_address else []
        return [
            *_sidecar_argv_common(pod, mesh),
            "--mode",
            "transparent",
            "--address",
            self.address,
            "--app-address",
            self.app_address,
            "--inbound",
            f"0.0.0.0:{ports.INBOUND}",
            "--outbound",
            f"127.0.0.1:{ports.OUTBOUND}",
            "--admin",
            f"127.0.0.1:{ports.ADMIN}",
            "--health",
            f"0.0.0.0:{ports.HEALTH}",
            # Istio's 15020; the host scrapes it through the agent's forward
            "--metrics",
            f"0.0.0.0:{ports.METRICS}",
            *advertise,
        ]

    def mesh_environment(self) -> dict[str, str]:
        # Transparent: the app's calls are intercepted, nothing to configure. An
        # inherited proxy setting would still send them elsewhere: none passes.
        return {"NO_PROXY": "", "no_proxy": ""}

    def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        return self.runner(fn, *args)

    @property
    def check_host(self) -> str:
        return "127.0.0.1"

    @property
    def sidecar_health_url(self) -> str:
        return f"http://127.0.0.1:{ports.HEALTH}/healthz/ready"

    @property
    def sidecar_admin_url(self) -> str:
        return f"http://127.0.0.1:{ports.ADMIN}"


# --- checks, blocking: run through `PodPlacement.run_blocking` --------------------------

# Straight to the address: a proxy from the environment must not take these. Built
# once: an opener loads the system's CA store (about 20 ms), and probes run often.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_ok(url: str, timeout: float, method: str = "GET") -> bool:
    """An HTTP request (GET, or an empty POST) answered 2xx or 3xx."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tcp_ok(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def command_ok(argv: list[str], working_dir: Path, timeout: float) -> bool:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=working_dir,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


async def run_probe(probe: Probe, placement: PodPlacement, host: str, working_dir: Path) -> bool:
    """One readiness check of the app at `host`: an HTTP GET answering 2xx/3xx, a TCP
    connect, or a command (run as one of the pod's processes) exiting 0, within the
    probe's timeout."""
    timeout = float(probe.timeout_seconds)
    if probe.http_get is not None:
        url = f"http://{host}:{probe.http_get.port}{probe.http_get.path}"
        return await placement.run_blocking(http_ok, url, timeout)
    if probe.tcp_socket is not None:
        return await placement.run_blocking(tcp_ok, host, probe.tcp_socket.port, timeout)
    assert probe.exec is not None
    argv = placement.wrap(list(probe.exec.command))
    return await placement.run_blocking(command_ok, argv, working_dir, timeout)
