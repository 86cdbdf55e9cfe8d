"""Roles: which bundles each kind of proxy receives — the controller's one table of roles.

A proxy names its role in its hello (`NodeInfo.role`). The role decides which bundles
are compiled for that proxy alone (`RoleBundles.own`: a sidecar its `inbound`, a gateway
also its `gateway` listeners); the service bundles of its subscriptions follow whatever
its role. The discovery server and `compile_snapshot` ask only this table, so adding a
role (the waypoint, the ztunnel) adds a row and a bundle compiler, never a branch.

A role the protocol names but this controller has no bundle compiler for yet is
`NotCompiled`: asking for its bundles raises `RoleNotCompiled`, whose message names the
role, and the discovery server refuses such a proxy at its hello rather than hand it
config meant for another role.

Pure, like the rest of the compiler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mycelium.control.compiler.common import DEFAULT_TRUST_DOMAIN, Bundle, CompiledEntry
from mycelium.control.compiler.gateway import compile_gateway
from mycelium.control.compiler.inbound import compile_inbound
from mycelium.control.compiler.service import compile_service
from mycelium.control.state import MeshState
from mycelium.discovery.protocol import NodeInfo
from mycelium.errors import MeshError

# state, the proxy, the trust domain -> the bundle
type OwnBundleCompiler = Callable[[MeshState, NodeInfo, str], Bundle]

# The kind of a subscribed service's bundle, as `OwnBundle.kind` names the others.
SERVICE_BUNDLE = "service"


@dataclass(frozen=True, slots=True)
class OwnBundle:
    """A bundle compiled for one proxy alone, from what it says it is."""

    kind: str  # its name in the discovery server's cache keys and the compile metric
    compile: OwnBundleCompiler


@dataclass(frozen=True, slots=True)
class RoleBundles:
    """What a proxy in one role receives besides its subscriptions' service bundles."""

    own: tuple[OwnBundle, ...]


@dataclass(frozen=True, slots=True)
class NotCompiled:
    """A role the protocol names that this controller compiles nothing for, and why."""

    why: str


class RoleNotCompiled(MeshError):
    """A proxy's role has no bundle compiler here; the message names the role."""

    def __init__(self, role: str, why: str) -> None:
        super().__init__(
            f"this controller compiles no config for proxies in the {role!r} role: {why}"
        )
        self.role = role


INBOUND = OwnBundle("inbound", compile_inbound)
# The gateway entry names no identity: the trust domain is the inbound's business.
GATEWAY = OwnBundle("gateway", lambda state, node, _trust_domain: compile_gateway(state, node))

_AMBIENT = "its bundle compiler comes with ambient mode; until then run a sidecar or a gateway"

ROLE_BUNDLES: dict[str, RoleBundles | NotCompiled] = {
    "sidecar": RoleBundles(own=(INBOUND,)),
    # A gateway is a workload too: its inbound carries its identity and policies.
    "gateway": RoleBundles(own=(INBOUND, GATEWAY)),
    # A waypoint's config (its namespace's services' L7 policy) and a ztunnel's (the
    # workloads of its node, their identities) are neither a sidecar's nor a gateway's.
    "waypoint": NotCompiled(_AMBIENT),
    "ztunnel": NotCompiled(_AMBIENT),
}

# Every own bundle by kind, for a cache that holds bundles by their kind.
OWN_BUNDLES: dict[str, OwnBundle] = {
    bundle.kind: bundle
    for plan in ROLE_BUNDLES.values()
    if isinstance(plan, RoleBundles)
    for bundle in plan.own
}


def bundles_of_role(role: str) -> RoleBundles:
    """The bundles a proxy in `role` receives; `RoleNotCompiled` when there are none."""
    plan = ROLE_BUNDLES.get(role)
    if plan is None:
        raise RoleNotCompiled(role, "the role is unknown to this controller; check its version")
    if isinstance(plan, NotCompiled):
        raise RoleNotCompiled(role, plan.why)
    return plan


def compile_snapshot(
    state: MeshState,
    node: NodeInfo,
    subscriptions: list[str] | set[str],
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> dict[str, CompiledEntry]:
    """The complete config of one proxy (the discovery server caches the pieces)."""
    entries: dict[str, CompiledEntry] = {}
    for own in bundles_of_role(node.role).own:
        entries.update(own.compile(state, node, trust_domain).entries)
    for reference in sorted(subscriptions):
        entries.update(compile_service(state, reference, node.namespace).entries)
    return entries
