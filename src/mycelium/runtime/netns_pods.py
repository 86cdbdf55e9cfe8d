"""netns pods on this machine: a node namespace with a bridge, a namespace per pod.

Nothing is added to the host's own network namespace: the bridge (`mycbr0`, the pod
network's first address) lives in the run's node namespace (`mycelium-<run>-node`,
see pod_network.node_netns), and every pod's
veth pair is created with its ends already in the node's and the pod's namespaces. The
host reaches pods, and pods reach the controller, only through sockets the node agent
holds in both namespaces (a port forward), never through a route; so pods can reach
nothing of the machine's real networks.

A pod gets: its namespace, `lo` and `eth0` up with its address, a default route via
the bridge (the nftables output hook comes after routing, so connecting to a service's
virtual IP needs a route to exist), the interception ruleset (`pod_ruleset`), and an
`/etc/netns/<namespace>/hosts` that `ip netns exec` shows the pod's processes as
/etc/hosts. Removing a pod deletes its namespace (which takes its veth pair and rules
along) and its hosts file. `sweep_leftovers` removes whatever a crashed run of the
same home left, recognised by its `mycelium-<run>-` prefix.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2 and nftables; without them,
`NetnsUnavailable` says what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from mycelium.errors import MeshError
from mycelium.runtime.pod_network import BRIDGE, PodNetworkPlan, node_netns, run_prefix

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
COMMAND_TIMEOUT_SECONDS = 30.0


class NetnsUnavailable(MeshError):
    """This process cannot make network namespaces (not root, or tools missing)."""


class NetnsCommandFailed(MeshError):
    """An `ip` or `nft` command the runtime ran failed; the message has its output."""


def _run(*argv: str, input_text: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NetnsUnavailable(
            f"{argv[0]} is not installed: netns pods need iproute2 and nftables "
            "(apt-get install iproute2 nftables), or run pods as processes"
        ) from exc
    if done.returncode != 0:
        raise NetnsCommandFailed(
            f"`{' '.join(argv)}` exited {done.returncode}: "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def run_in(netns: str, *argv: str, input_text: str | None = None) -> str:
    """Run a command inside a pod's (or the node's) namespace; its output, or
    `NetnsCommandFailed` with what it said."""
    return _run(IP, "netns", "exec", netns, *argv, input_text=input_text)


def check_available() -> None:
    """Raise `NetnsUnavailable` with the reason when netns pods cannot run here."""
    if os.geteuid() != 0:
        raise NetnsUnavailable(
            "netns pods need root (network namespaces, veth pairs, nftables): run "
            "`myc up` as root, or with --pods process"
        )
    for tool in (IP, NFT):
        if not Path(tool).exists():
            raise NetnsUnavailable(
                f"{tool} is missing: apt-get install iproute2 nftables, or use --pods process"
            )


def namespace_names() -> set[str]:
    """The network namespaces `ip netns` knows now."""
    return {line.split()[0] for line in _run(IP, "netns", "list").splitlines() if line}


def ensure_node(run: str, node_address: str, prefix_length: int) -> None:
    """The run's node namespace and its bridge, created once per run."""
    node = node_netns(run)
    if node in namespace_names():
        return
    _run(IP, "netns", "add", node)
    try:
        run_in(node, IP, "link", "set", "lo", "up")
        run_in(node, IP, "link", "add", BRIDGE, "type", "bridge")
        run_in(node, IP, "addr", "add", f"{node_address}/{prefix_length}", "dev", BRIDGE)
        run_in(node, IP, "link", "set", BRIDGE, "up")
    except MeshError:
        _run(IP, "netns", "delete", node)
        raise


def create_pod(plan: PodNetworkPlan, ruleset: str, hosts: str) -> None:
    """The pod's namespace, wired to the bridge, intercepting, with its hosts file.
    All or nothing: a failure removes what was made before raising."""
    _run(IP, "netns", "add", plan.netns)
    try:
        _run(
            IP,
            "link",
            "add",
            plan.host_interface,
            "netns",
            plan.node_netns,
            "type",
            "veth",
            "peer",
            "name",
            plan.pod_interface,
            "netns",
            plan.netns,
        )
        run_in(plan.node_netns, IP, "link", "set", plan.host_interface, "master", BRIDGE, "up")
        address = f"{plan.address}/{plan.prefix_length}"
        run_in(plan.netns, IP, "link", "set", "lo", "up")
        run_in(plan.netns, IP, "addr", "add", address, "dev", plan.pod_interface)
        run_in(plan.netns, IP, "link", "set", plan.pod_interface, "up")
        run_in(plan.netns, IP, "route", "add", "default", "via", str(plan.node_address))
        if ruleset:  # a pod without a sidecar (a gateway) intercepts nothing
            run_in(plan.netns, NFT, "-f", "-", input_text=ruleset)
        write_hosts(plan.netns, hosts)
    except MeshError:
        remove_pod(plan.netns)
        raise


def write_hosts(netns: str, hosts: str) -> None:
    """What the pod's processes read as /etc/hosts (`ip netns exec` mounts it there).

    An existing file is rewritten in place: processes already running see the file
    through a bind mount of its inode, which a rename would leave behind."""
    directory = NETNS_ETC_DIR / netns
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "hosts"
    with open(target, "a+") as file:
        file.seek(0)
        file.truncate()
        file.write(hosts)


def remove_pod(netns: str) -> None:
    """Delete the pod's namespace (its veth pair and rules go with it) and hosts file."""
    if netns in namespace_names():
        _run(IP, "netns", "delete", netns)
    shutil.rmtree(NETNS_ETC_DIR / netns, ignore_errors=True)


def remove_node(run: str) -> None:
    remove_pod(node_netns(run))


def sweep_leftovers(run: str) -> list[str]:
    """Remove every namespace (and hosts directory) the run left behind; returns their
    names. The node goes last: pods' veth ends live in it."""
    prefix, node = run_prefix(run), node_netns(run)
    names = sorted(n for n in namespace_names() if n.startswith(prefix))
    names.sort(key=lambda n: n == node)
    for name in names:
        remove_pod(name)
    if NETNS_ETC_DIR.exists():
        for directory in NETNS_ETC_DIR.glob(f"{prefix}*"):
            shutil.rmtree(directory, ignore_errors=True)
    return names
