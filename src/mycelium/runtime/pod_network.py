"""Where pods live on this machine's network, planned without touching it.

Everything a run creates carries the `mycelium-<run>-` prefix (namespaces; `<run>`
names the mesh's home, so two meshes on one machine, say the demo and a test run, never
touch each other's) or the `myc` prefix (interfaces, which the kernel limits to 15
bytes, and which live inside the run's own node namespace), so that the next `myc up`
of the same home can find and remove what a crashed run left behind, and nothing else.

- **netns pods** (root): a network namespace per pod, a veth pair from the node bridge
  (`mycbr0`, 198.18.64.1) to the pod's `eth0`, an address from 198.18.64.0/18 (inside
  the benchmarking range 198.18.0.0/15, so nothing is routed to real networks), and
  nftables rules in the pod: TCP arriving on eth0 goes to the sidecar's inbound port,
  TCP leaving the pod to its outbound port, except the sidecar's own connections
  (SO_MARK) and those to the controller. Service names resolve inside the pod through
  `/etc/netns/<pod namespace>/hosts`, which `ip netns exec` puts in place of
  /etc/hosts.
- **process pods** (no root): a loopback address per pod from 127.0.64.0/18 for its
  sidecar, and the same host part in 127.1.0.0/16 for its app (`app_address_for`);
  apps reach the mesh through HTTP_PROXY and explicit ports.
- **Service vips** come from 198.19.0.0/16, allocated by the controller
  (`control/vips.py`, `SERVICE_VIP_NETWORK`): the other half of the benchmarking range,
  never a pod's address.

This module only computes names, addresses and rule text (`PodNetworkPlan`,
`AddressPool`, `pod_ruleset`, `hosts_file`); `runtime/netns_pods.py` applies them.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mycelium import ports
from mycelium.errors import MeshError

NETNS_PREFIX = "mycelium-"
INTERFACE_PREFIX = "myc"
BRIDGE = "mycbr0"
POD_NETWORK = ipaddress.IPv4Network("198.18.64.0/18")
PROCESS_NETWORK = ipaddress.IPv4Network("127.0.64.0/18")
# Linux limits interface names to 15 bytes (IFNAMSIZ - 1).
MAX_INTERFACE_NAME = 15
PROXY_MARK = 0x539  # what the sidecar sets on its own sockets (proxy/settings.py)


# A process pod's app listens on the same host part in 127.1.0.0/16 as its pod's
# address has in 127.0.0.0/16: two loopback addresses per pod, no port clashes.
APP_ADDRESS_OFFSET = 1 << 16


# Process pods of one mesh take one /24 of PROCESS_NETWORK, so that two meshes on one
# machine (the demo and a test run, say) never hand out the same loopback address.
LOOPBACK_BLOCK_PREFIX = 24


def loopback_blocks() -> list[ipaddress.IPv4Network]:
    """The blocks a mesh's process pods may take, in the order they are tried."""
    return list(PROCESS_NETWORK.subnets(new_prefix=LOOPBACK_BLOCK_PREFIX))


def app_address_for(pod_address: str) -> str:
    """Where a process pod's app listens, given the pod's (its sidecar's) address."""
    return str(ipaddress.IPv4Address(pod_address) + APP_ADDRESS_OFFSET)


class AddressesExhausted(MeshError):
    """No address left in the pod network."""


class AddressPool:
    """Hands out pod addresses from a network, one per pod name, and takes them back.

    The network's first host is the node's (the bridge, or unused in process mode);
    pods get the rest in order, and a released address is reused last, so that a pod
    restarted at once is unlikely to get the address its predecessor's peers still
    remember."""

    def __init__(self, network: ipaddress.IPv4Network) -> None:
        hosts = network.hosts()
        self.network = network
        self.node = next(hosts)
        self._free = list(hosts)
        self._free.reverse()  # pop() from the end hands out the lowest first
        self._taken: dict[str, ipaddress.IPv4Address] = {}

    def assign(self, pod: str) -> ipaddress.IPv4Address:
        """The pod's address (the same one on every call until released)."""
        found = self._taken.get(pod)
        if found is not None:
            return found
        if not self._free:
            raise AddressesExhausted(
                f"the pod network {self.network} has no address left for {pod}: "
                "scale something down"
            )
        address = self._free.pop()
        self._taken[pod] = address
        return address

    def release(self, pod: str) -> None:
        address = self._taken.pop(pod, None)
        if address is not None:
            self._free.insert(0, address)

    def taken(self) -> dict[str, ipaddress.IPv4Address]:
        return dict(self._taken)


def run_id(home: str) -> str:
    """A short name for the mesh whose home is `home`, in its namespaces' names."""
    return hashlib.blake2b(home.encode(), digest_size=3).hexdigest()


def run_prefix(run: str) -> str:
    return f"{NETNS_PREFIX}{run}-"


def node_netns(run: str) -> str:
    """The run's node namespace: its bridge, and the node's end of every pod's veth."""
    return f"{run_prefix(run)}node"


@dataclass(frozen=True, slots=True)
class PodNetworkPlan:
    """One netns pod's names and addresses."""

    run: str
    pod: str
    index: int  # unique among the run's pods, for interface names
    address: ipaddress.IPv4Address
    node_address: ipaddress.IPv4Address
    prefix_length: int

    @property
    def netns(self) -> str:
        return f"{run_prefix(self.run)}{self.pod}"

    @property
    def node_netns(self) -> str:
        return node_netns(self.run)

    @property
    def host_interface(self) -> str:
        """The node's end of the pod's veth pair."""
        name = f"{INTERFACE_PREFIX}v{self.index}"
        if len(name) > MAX_INTERFACE_NAME:
            raise ValueError(f"interface name {name!r} is longer than the kernel allows")
        return name

    @property
    def pod_interface(self) -> str:
        return "eth0"


def plan_pod(run: str, pod: str, index: int, pool: AddressPool) -> PodNetworkPlan:
    return PodNetworkPlan(
        run=run,
        pod=pod,
        index=index,
        address=pool.assign(pod),
        node_address=pool.node,
        prefix_length=pool.network.prefixlen,
    )


def pod_ruleset(
    *,
    controller: tuple[str, int],
    pod_address: str | None = None,
    inbound_port: int = ports.INBOUND,
    outbound_port: int = ports.OUTBOUND,
    proxy_mark: int = PROXY_MARK,
    exempt_inbound_ports: Iterable[int] = (ports.ADMIN, ports.HEALTH),
    pod_interface: str = "eth0",
) -> str:
    """The nftables ruleset (`nft -f` syntax) that sends a pod's TCP through its sidecar.

    Inbound: TCP arriving on the pod's interface goes to `inbound_port`, except to the
    sidecar's own admin and health ports. Outbound: TCP the pod sends goes to
    `outbound_port`, except the sidecar's own connections (they carry `proxy_mark`),
    loopback, and the connection to the controller (discovery is how the sidecar
    learns its config: it must not go through the sidecar itself).

    A call to the pod's own service can be balanced to the pod itself: the sidecar then
    connects to its own `pod_address`, which the kernel routes over loopback, where the
    inbound rule (on eth0) never sees it. Such a connection is sent to the inbound port
    too, so the pod's own policy still applies to it."""
    exempt = ", ".join(str(port) for port in sorted(set(exempt_inbound_ports)))
    controller_host, controller_port = controller
    to_self = (
        f"meta mark {proxy_mark:#x} ip daddr {pod_address} tcp dport != {{ {exempt} }} "
        f"redirect to :{inbound_port}\n        "
        if pod_address
        else ""
    )
    return f"""table ip mycelium {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{pod_interface}" tcp dport {{ {exempt} }} return
        iifname "{pod_interface}" meta l4proto tcp redirect to :{inbound_port}
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        {to_self}meta mark {proxy_mark:#x} return
        ip daddr 127.0.0.0/8 return
        ip daddr {controller_host} tcp dport {controller_port} return
        meta l4proto tcp redirect to :{outbound_port}
    }}
}}
"""


def hosts_file(
    services: Iterable[tuple[str, str, str] | tuple[str, str, str, Sequence[str]]],
    trust_domain: str = "cluster.local",
) -> str:
    """`/etc/hosts` for pods: each service's virtual IP under its short name, its
    `name.namespace` and its `name.namespace.svc.<domain>` (given as (vip, name,
    namespace)), then its extra host names when given as a fourth item (`spec.hosts`:
    how callers name an external Service, `api.example.com`). Short names are those
    of every namespace: a name in two namespaces resolves to the first given, as pods
    of the default namespace would expect."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    short_seen: set[str] = set()
    for vip, name, namespace, *extra in services:
        names = []
        if name not in short_seen:
            short_seen.add(name)
            names.append(name)
        names += [f"{name}.{namespace}", f"{name}.{namespace}.svc.{trust_domain}"]
        names += [host for host in (extra[0] if extra else ()) if host not in short_seen]
        short_seen.update(names)
        lines.append(f"{vip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"
