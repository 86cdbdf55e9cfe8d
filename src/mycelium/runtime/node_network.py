"""The node's side of pod networking: where each pod goes, and what joins it to the host.

`LoopbackNode` (process pods, no root) hands out loopback addresses and needs nothing
else. `NetnsNode` (root) owns the kernel objects of a run: it sweeps what a crashed run
left, makes the node namespace and its bridge, a namespace per pod (with interception
rules when the pod has a sidecar) and the pods' hosts files, and removes all of it
again. Pods reach the controller through a port forward the agent holds inside each
pod's namespace (`127.0.0.1:<discovery port>` there, the controller's address on the
host): nothing is routed between the pods and the host, and the controller's
certificate (valid for 127.0.0.1) verifies unchanged.

Both hand out `PodPlacement`s (`runtime/pod_placement.py`): `plan` decides names and
addresses without touching anything; `prepare` makes the pod's network before its
first process starts; `release` removes it after its last process ended.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mycelium.runtime import netns_pods
from mycelium.runtime.pod_network import (
    POD_NETWORK,
    PROCESS_NETWORK,
    AddressPool,
    PodNetworkPlan,
    app_address_for,
    hosts_file,
    node_netns,
    plan_pod,
    pod_ruleset,
)
from mycelium.runtime.pod_placement import LoopbackPlacement, NetnsPlacement, PodPlacement
from mycelium.runtime.port_forward import InNamespace, PortForward

log = logging.getLogger("mycelium.runtime.node")


# A service known to pods by name: (virtual IP, name, namespace).
type ServiceName = tuple[str, str, str]


class NodeNetwork(Protocol):
    @property
    def discovery(self) -> str:
        """The controller's discovery address as pods see it."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def plan(self, pod: str, sidecar: bool) -> PodPlacement: ...

    async def prepare(self, placement: PodPlacement, sidecar: bool) -> None: ...

    async def release(self, pod: str) -> None: ...

    def set_service_names(self, services: Iterable[ServiceName]) -> None:
        """The services pods resolve by name (netns pods' /etc/hosts)."""
        ...

    @property
    def connect_from(self) -> InNamespace:
        """Where connections to pod addresses are made (host ports)."""
        ...


async def _to_thread[T](fn: Callable[..., T], /, *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


@dataclass(slots=True)
class LoopbackNode:
    discovery: str
    pool: AddressPool = field(default_factory=lambda: AddressPool(PROCESS_NETWORK))
    _host: InNamespace = field(default_factory=InNamespace)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await asyncio.to_thread(self._host.close)

    def plan(self, pod: str, sidecar: bool) -> PodPlacement:
        address = str(self.pool.assign(pod))
        return LoopbackPlacement(address, app_address_for(address), _to_thread)

    async def prepare(self, placement: PodPlacement, sidecar: bool) -> None:
        return None

    async def release(self, pod: str) -> None:
        self.pool.release(pod)

    def set_service_names(self, services: Iterable[ServiceName]) -> None:
        return None  # process pods name services through HTTP_PROXY

    @property
    def connect_from(self) -> InNamespace:
        return self._host


@dataclass(slots=True)
class _NetnsPod:
    plan: PodNetworkPlan
    inside: InNamespace | None = None  # once its namespace exists
    forward: PortForward | None = None


@dataclass(slots=True)
class NetnsNode:
    run: str  # pod_network.run_id of the mesh's home
    controller: tuple[str, int]  # the controller's discovery address on the host
    pool: AddressPool = field(default_factory=lambda: AddressPool(POD_NETWORK))
    pods: dict[str, _NetnsPod] = field(default_factory=dict)
    _hosts: str = field(default_factory=lambda: hosts_file([]))
    _next_index: int = 1
    _node: InNamespace | None = None
    _host: InNamespace = field(default_factory=InNamespace)

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

    async def stop(self) -> None:
        for name in list(self.pods):
            await self.release(name)
        if self._node is not None:
            await asyncio.to_thread(self._node.close)
        await asyncio.to_thread(self._host.close)
        await asyncio.to_thread(netns_pods.remove_node, self.run)

    def plan(self, pod: str, sidecar: bool) -> PodPlacement:
        plan = plan_pod(self.run, pod, self._next_index, self.pool)
        self._next_index += 1
        self.pods[pod] = _NetnsPod(plan)
        return NetnsPlacement(
            address=str(plan.address),
            netns=plan.netns,
            ip_command=netns_pods.IP,
            runner=functools.partial(self._inside, pod),
        )

    async def _inside[T](self, pod: str, fn: Callable[..., T], /, *args: Any) -> T:
        inside = self.pods[pod].inside
        assert inside is not None, "prepare() the pod first"
        return await inside.call(fn, *args)

    async def prepare(self, placement: PodPlacement, sidecar: bool) -> None:
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

    async def release(self, pod_name: str) -> None:
        pod = self.pods.pop(pod_name, None)
        if pod is None:
            return
        if pod.forward is not None:
            await pod.forward.stop()
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
