"""The node's side of pod networking: where each pod goes, and what joins it to the host.

`LoopbackNode` (process pods, no root) hands out loopback addresses and needs nothing
else. `NetnsNode` (root) owns the kernel objects of a run: it sweeps what a crashed run
left, makes the node namespace and its bridge, a namespace per pod (with interception
rules when the pod has a sidecar) and the pods' hosts files, and removes all of it
again. Pods reach the controller through a port forward the agent holds inside each
pod's namespace (`127.0.0.1:<discovery port>` there, the controller's address on the
host): nothing is routed between the pods and the host, and the controller's
certificate (valid for 127.0.0.1) verifies unchanged.

A pod with `hostNetwork` (an egress gateway, which must reach the host's networks) is
no network namespace: on a `NetnsNode` it gets a loopback address on the host, like a
process pod, and each of its ports is forwarded from the node's bridge address
(`198.18.64.1:<port>` in the node namespace) to it, which is where it tells the mesh
it is (`advertise_address`). Two such pods cannot share a port.

Both hand out `PodPlacement`s (`runtime/pod_placement.py`): `plan` decides names and
addresses without touching anything; `prepare` makes the pod's network before its
first process starts; `release` removes it after its last process ended.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import ipaddress
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from mycelium import ports
from mycelium.net.netns import InNamespace
from mycelium.runtime import netns_pods
from mycelium.runtime.pod_network import (
    POD_NETWORK,
    PROCESS_NETWORK,
    AddressesExhausted,
    AddressPool,
    PodNetworkPlan,
    app_address_for,
    hosts_file,
    loopback_blocks,
    node_netns,
    plan_pod,
    pod_ruleset,
)
from mycelium.runtime.pod_placement import LoopbackPlacement, NetnsPlacement, PodPlacement
from mycelium.runtime.port_forward import PortForward

log = logging.getLogger("mycelium.runtime.node")

# Addresses tried for a hostNetwork pod before giving up: other processes on the host
# may hold a few of them, not dozens.
HOST_ADDRESS_ATTEMPTS = 64


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


# A service known to pods by name: (virtual IP, name, namespace, extra host names).
type ServiceName = tuple[str, str, str, tuple[str, ...]]


class NodeNetwork(Protocol):
    @property
    def discovery(self) -> str:
        """The controller's discovery address as pods see it."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def plan(
        self, pod: str, sidecar: bool, host_network: bool = False, ports: Sequence[int] = ()
    ) -> PodPlacement:
        """`ports`: what a hostNetwork pod listens on, for the node to forward."""
        ...

    async def prepare(self, placement: PodPlacement, sidecar: bool) -> None: ...

    async def release(self, pod: str) -> None: ...

    def set_service_names(self, services: Iterable[ServiceName]) -> None:
        """The services pods resolve by name (netns pods' /etc/hosts)."""
        ...

    @property
    def connect_from(self) -> InNamespace:
        """Where connections to pod addresses are made (host ports)."""
        ...


class LoopbackBlock:
    """One /24 of loopback addresses claimed for this mesh's host-side pods, with a lock
    file held for the agent's life (`flock`: a dead agent's claim ends with it)."""

    def __init__(self, lock_dir: Path | None = None) -> None:
        self._lock_dir = lock_dir or Path(tempfile.gettempdir()) / f"mycelium-{os.getuid()}"
        self._handle: TextIO | None = None
        self.network: ipaddress.IPv4Network | None = None

    def claim(self) -> ipaddress.IPv4Network:
        self._lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for block in loopback_blocks():
            handle = open(self._lock_dir / f"pods-{block.network_address}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._handle, self.network = handle, block
            return block
        raise AddressesExhausted(
            f"every block of {PROCESS_NETWORK} is taken by another mesh on this machine: "
            "stop one (`myc down`)"
        )

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # the lock goes with the descriptor
            self._handle = None


@dataclass(slots=True)
class LoopbackNode:
    discovery: str
    pool: AddressPool = field(default_factory=lambda: AddressPool(PROCESS_NETWORK))
    _host: InNamespace = field(default_factory=InNamespace)
    _block: LoopbackBlock = field(default_factory=LoopbackBlock)

    async def start(self) -> None:
        self.pool = AddressPool(await asyncio.to_thread(self._block.claim))

    async def stop(self) -> None:
        await asyncio.to_thread(self._host.close)
        self._block.release()

    def plan(
        self, pod: str, sidecar: bool, host_network: bool = False, ports: Sequence[int] = ()
    ) -> PodPlacement:
        # Every process pod is in the host's network already: hostNetwork changes nothing.
        address = str(self.pool.assign(pod))
        return LoopbackPlacement(address, app_address_for(address), asyncio.to_thread)

    async def prepare(self, placement: PodPlacement, sidecar: bool) -> None:
        return None

    async def release(self, pod: str) -> None:
        self.pool.release(pod)

    def set_service_names(self, services: Iterable[ServiceName]) -> None:
        return None  # process pods name services through HTTP_PROXY

    @property
    def connect_from(self) -> InNamespace:
        return self._host


METRICS_PORT = ports.METRICS  # (plan's `ports` argument hides the module there)


def _metrics_key(pod: str) -> str:
    """The host address pool's key for a netns pod's metrics forward."""
    return f"{pod}/metrics"


@dataclass(slots=True)
class _NetnsPod:
    plan: PodNetworkPlan
    metrics_host: str  # the host loopback address forwarded to its proxy's metrics
    inside: InNamespace | None = None  # once its namespace exists
    forward: PortForward | None = None  # the controller's port, inside the pod
    metrics: PortForward | None = None  # its metrics port, on the host


@dataclass(slots=True)
class _HostPod:
    """A hostNetwork pod of a netns node: its loopback address, and the forwards from
    the node's bridge address to its ports."""

    placement: LoopbackPlacement
    ports: tuple[int, ...]
    forwards: list[PortForward] = field(default_factory=list)


@dataclass(slots=True)
class NetnsNode:
    run: str  # pod_network.run_id of the mesh's home
    controller: tuple[str, int]  # the controller's discovery address on the host
    pool: AddressPool = field(default_factory=lambda: AddressPool(POD_NETWORK))
    pods: dict[str, _NetnsPod] = field(default_factory=dict)
    host_pool: AddressPool = field(default_factory=lambda: AddressPool(PROCESS_NETWORK))
    host_pods: dict[str, _HostPod] = field(default_factory=dict)
    _hosts: str = field(default_factory=lambda: hosts_file([]))
    _next_index: int = 1
    _node: InNamespace | None = None
    _host: InNamespace = field(default_factory=InNamespace)
    _block: LoopbackBlock = field(default_factory=LoopbackBlock)

    @property
    def discovery(self) -> str:
        return f"127.0.0.1:{self.controller[1]}"

    async def start(self) -> None:
        netns_pods.check_available()
        swept = await asyncio.to_thread(netns_pods.sweep_leftovers, self.run)
        if swept:
            log.warning("removed what an earlier run left behind: %s", ", ".join(swept))
        await asyncio.to_thread(
            netns_pods.ensure_node, self.run, str(self.pool.node), self.pool.network.prefixlen
        )
        self._node = InNamespace(node_netns(self.run))
        self.host_pool = AddressPool(await asyncio.to_thread(self._block.claim))

    async def stop(self) -> None:
        for name in [*self.pods, *self.host_pods]:
            await self.release(name)
        if self._node is not None:
            await asyncio.to_thread(self._node.close)
        await asyncio.to_thread(self._host.close)
        await asyncio.to_thread(netns_pods.remove_node, self.run)
        self._block.release()

    def plan(
        self, pod: str, sidecar: bool, host_network: bool = False, ports: Sequence[int] = ()
    ) -> PodPlacement:
        if host_network:
            address = self._free_host_address(pod, ports)
            placement = LoopbackPlacement(
                address, app_address_for(address), asyncio.to_thread, str(self.pool.node)
            )
            self.host_pods[pod] = _HostPod(placement, tuple(ports))
            return placement
        plan = plan_pod(self.run, pod, self._next_index, self.pool)
        self._next_index += 1
        # A Prometheus on the host has no route into the pod: it scrapes this address.
        metrics_host = self._free_host_address(_metrics_key(pod), ())
        self.pods[pod] = _NetnsPod(plan, metrics_host)
        return NetnsPlacement(
            address=str(plan.address),
            netns=plan.netns,
            ip_command=netns_pods.IP,
            runner=functools.partial(self._inside, pod),
            metrics_address=f"{metrics_host}:{METRICS_PORT}",
        )

    def _free_host_address(self, pod: str, app_ports: Sequence[int]) -> str:
        """A loopback address for a hostNetwork pod where its ports (and its proxy's
        admin, health and metrics ports) are free: the host is shared with whatever
        else runs there, process pods of another mesh included."""
        wanted = [*app_ports, ports.ADMIN, ports.HEALTH, ports.METRICS]
        for _ in range(HOST_ADDRESS_ATTEMPTS):
            address = str(self.host_pool.assign(pod))
            if all(_bindable(address, port) for port in wanted):
                return address
            self.host_pool.release(pod)  # reused last: the next call tries another
        raise AddressesExhausted(
            f"no loopback address in {self.host_pool.network} has ports "
            f"{', '.join(map(str, wanted))} free for {pod}"
        )

    async def _inside[T](self, pod: str, fn: Callable[..., T], /, *args: Any) -> T:
        inside = self.pods[pod].inside
        assert inside is not None, "prepare() the pod first"
        return await inside.call(fn, *args)

    async def prepare(self, placement: PodPlacement, sidecar: bool) -> None:
        host_pod = next((p for p in self.host_pods.values() if p.placement is placement), None)
        if host_pod is not None:
            await self._forward_to_host(host_pod)
            return
        assert isinstance(placement, NetnsPlacement)
        pod = next(p for p in self.pods.values() if p.plan.netns == placement.netns)
        # The controller's port inside the pod is the agent's forward: exempt it.
        rules = (
            pod_ruleset(controller=("127.0.0.1", self.controller[1]), pod_address=placement.address)
            if sidecar
            else ""
        )
        await asyncio.to_thread(netns_pods.create_pod, pod.plan, rules, self._hosts)
        pod.inside = InNamespace(pod.plan.netns)
        pod.forward = PortForward(
            ("127.0.0.1", self.controller[1]),
            self.controller,
            listen_in=pod.inside,
            connect_in=self._host,
        )
        await pod.forward.start()
        # The host's scrapes of the pod's proxy: a sidecar's metrics listen on every
        # address of the pod and loopback escapes its capture rules; a pod without a
        # sidecar (a gateway) has no rules, and its proxy listens on the pod's address.
        pod.metrics = PortForward(
            (pod.metrics_host, ports.METRICS),
            ("127.0.0.1" if sidecar else placement.address, ports.METRICS),
            listen_in=self._host,
            connect_in=pod.inside,
        )
        await pod.metrics.start()

    async def _forward_to_host(self, pod: _HostPod) -> None:
        """Pods reach a hostNetwork pod's ports at the bridge address: a listener there
        in the node namespace, connecting to the pod's loopback address on the host."""
        assert self._node is not None, "start() first"
        bridge = str(self.pool.node)
        for port in pod.ports:
            forward = PortForward(
                (bridge, port),
                (pod.placement.address, port),
                listen_in=self._node,
                connect_in=self._host,
            )
            await forward.start()  # a port another hostNetwork pod holds: PortForwardError
            pod.forwards.append(forward)

    async def release(self, pod_name: str) -> None:
        host_pod = self.host_pods.pop(pod_name, None)
        if host_pod is not None:
            for forward in host_pod.forwards:
                await forward.stop()
            self.host_pool.release(pod_name)
            return
        pod = self.pods.pop(pod_name, None)
        if pod is None:
            return
        for each in (pod.forward, pod.metrics):
            if each is not None:
                await each.stop()
        self.host_pool.release(_metrics_key(pod_name))
        if pod.inside is not None:
            await asyncio.to_thread(pod.inside.close)
        await asyncio.to_thread(netns_pods.remove_pod, pod.plan.netns)
        self.pool.release(pod_name)

    def set_service_names(self, services: Iterable[ServiceName]) -> None:
        text = hosts_file(services)
        if text == self._hosts:
            return
        self._hosts = text
        for pod in self.pods.values():
            netns_pods.write_hosts(pod.plan.netns, text)

    @property
    def connect_from(self) -> InNamespace:
        assert self._node is not None, "start() first"
        return self._node
