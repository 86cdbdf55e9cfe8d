"""Service virtual IPs: the controller gives every Service one, as Kubernetes gives a
Service its clusterIP.

Addresses come from `SERVICE_VIP_NETWORK`. A Service applied without `vip` gets a free
one, and keeps it when applied again without `vip` (manifests are re-applied all the
time; clients and pods' /etc/hosts remember the address). A `vip` the user writes is
kept, wherever it lies, unless another Service holds it.

Who holds which address is recorded in the store as one *claim* per address in use:
`/mycelium-vips/<address>`, whose value is the owning Service's store key. A claim is
written, moved or deleted in the same transaction as its Service, with a compare on
the claim's revision (0: absent), so that two applies — on one controller or on two —
cannot hand out one address: the loser's transaction fails, and it reads again and
picks another. Claims live outside `/mycelium/` because they are not resources: the
controller's mirror, `myc get` and watches never see them.

This module is sans-IO: `plan_vips` is given the Services of a batch, what the store
holds for them, and the claims, and returns the Services with their addresses filled
in and the compares and writes that make it so. `apply.py` does the reading and writing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mycelium.api.errors import ResourceValidationError, ValidationIssue
from mycelium.api.meta import resource_ref
from mycelium.api.service import Service
from mycelium.errors import MeshError
from mycelium.store import Compare, Delete, Put, TxnOp

# Inside the benchmarking range 198.18.0.0/15 (RFC 2544), which nothing routes to real
# networks, and apart from the pods' 198.18.64.0/18 (runtime/pod_network.py): a VIP is
# never a pod's address. A /16 gives 65,534 Services.
SERVICE_VIP_NETWORK = ipaddress.IPv4Network("198.19.0.0/16")

VIP_CLAIM_PREFIX = "/mycelium-vips/"


class VipsExhausted(MeshError):
    """Every address of the service VIP range is held by a Service."""


def claim_key(address: str) -> str:
    """The store key that records which Service holds `address`."""
    return f"{VIP_CLAIM_PREFIX}{address}"


def free_vip(
    taken: Container[str], *, start: int = 0, network: ipaddress.IPv4Network = SERVICE_VIP_NETWORK
) -> str:
    """The first usable address of `network` not in `taken`, looking from the `start`-th
    host on and wrapping around.

    Callers start at a random host: two controllers allocating at the same moment then
    almost never pick the same address, so their transactions rarely conflict (the
    compare on the claim settles the rare case)."""
    first = int(network.network_address) + 1
    hosts = network.num_addresses - 2  # neither the network nor the broadcast address
    for step in range(hosts):
        candidate = str(ipaddress.IPv4Address(first + (start + step) % hosts))
        if candidate not in taken:
            return candidate
    raise VipsExhausted(
        f"every address of the service VIP range {network} is held by a Service; "
        "delete unused Services"
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim as read from the store."""

    owner: str  # the Service's store key
    mod_revision: int


@dataclass(frozen=True, slots=True)
class VipPlan:
    """What an apply writes for its Services' addresses."""

    services: dict[str, Service]  # by store key: the Services with `vip` filled in
    compares: list[Compare] = field(default_factory=list)
    ops: list[TxnOp] = field(default_factory=list)


def owner_ref(owner_key: str) -> str:
    """ "Service/<namespace>/<name>" from a Service's store key."""
    _, _, kind, namespace, name = owner_key.split("/", 4)
    return resource_ref("Service", namespace, name) if kind == "service" else owner_key


def plan_vips(
    services: Sequence[Service],
    stored_vips: Mapping[str, str | None],
    claims: Mapping[str, Claim],
    random_start: Callable[[], int],
) -> VipPlan:
    """Give each Service of a batch its address, and say which claims to write.

    `stored_vips` maps a Service's key to the `vip` the store holds for it (absent or
    None: none); `claims` maps each claimed address to its claim. Raises
    `ResourceValidationError` when a `vip` is held by another Service, naming it."""
    # address -> its owner once this batch is written (None: released)
    owners: dict[str, str | None] = {address: claim.owner for address, claim in claims.items()}
    wanted: dict[str, str | None] = {}
    for service in services:
        old = stored_vips.get(service.key)
        new = service.spec.vip or old
        wanted[service.key] = new
        if old is not None and old != new and owners.get(old) == service.key:
            owners[old] = None

    issues: list[ValidationIssue] = []
    for service in services:
        address = wanted[service.key]
        if address is None:
            continue
        holder = owners.get(address)
        if holder is not None and holder != service.key:
            issues.append(
                service.issue(
                    "spec.vip",
                    f"{address} is already the vip of {owner_ref(holder)}; choose another "
                    "address, or leave vip out and the controller allocates one",
                )
            )
        else:
            owners[address] = service.key
    if issues:
        raise ResourceValidationError(issues)

    planned: dict[str, Service] = {}
    for service in services:
        address = wanted[service.key]
        if address is None:
            # Not an address claimed or released by this batch either: writing one
            # claim key twice in a transaction is refused.
            address = free_vip(owners, start=random_start())
            owners[address] = service.key
        planned[service.key] = _with_vip(service, address)

    plan = VipPlan(planned)
    for address, owner in owners.items():
        claim = claims.get(address)
        current = claim.owner if claim is not None else None
        if owner == current:
            continue
        key = claim_key(address)
        plan.compares.append(Compare(key, claim.mod_revision if claim is not None else 0))
        plan.ops.append(Delete(key) if owner is None else Put(key, owner.encode()))
    return plan


def _with_vip(service: Service, address: str) -> Service:
    if service.spec.vip == address:
        return service
    spec = service.spec.model_copy(update={"vip": address})
    return service.model_copy(update={"spec": spec})


def stored_vip(value: bytes) -> str | None:
    """The `vip` of a Service as stored (JSON), or None."""
    spec: Any = json.loads(value).get("spec")
    vip = spec.get("vip") if isinstance(spec, dict) else None
    return vip if isinstance(vip, str) else None
