"""Apply: validate a batch of files as a whole, then write it in one store transaction.

Nothing is half-applied: every file is parsed and validated, cross-references are
checked against the batch and the store, and only then is one transaction written, with
a compare on every key's revision so a concurrent writer cannot be overwritten blindly
(on a conflict the batch is re-read and retried). An acknowledged apply is durable: the
store acknowledges only what it committed.

Services get their virtual IPs here, in the same transaction (see `vips.py`), and
`delete_resource` frees a Service's address in the transaction that deletes it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mycelium.api import Resource, from_stored
from mycelium.api.documents import changed_fields
from mycelium.api.errors import ResourceValidationError, ValidationIssue
from mycelium.api.loading import duplicate_issues, load_documents
from mycelium.api.meta import kind_prefix
from mycelium.api.references import check_references
from mycelium.api.service import Service
from mycelium.control.state import MeshState
from mycelium.control.vips import (
    SERVICE_VIP_NETWORK,
    VIP_CLAIM_PREFIX,
    Claim,
    VipsExhausted,
    claim_key,
    plan_vips,
    stored_vip,
)
from mycelium.store import Compare, Delete, KeyValue, Put, Store, StoreError, TxnOp

# A conflicting concurrent writer is rare; a few re-reads settle it or something is wrong.
MAX_CONFLICT_RETRIES = 5

type Action = Literal["created", "configured", "unchanged"]


@dataclass(frozen=True, slots=True)
class SourceFile:
    name: str
    content: str


@dataclass(frozen=True, slots=True)
class AppliedResource:
    kind: str
    namespace: str
    name: str
    action: Action
    # for "configured": each field that changes, (path, stored value, new value)
    changes: tuple[tuple[str, Any, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int
    results: list[AppliedResource]


class ApplyConflict(StoreError):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"the resources kept changing underneath this {what}; nothing was written — retry"
        )


def _random_host() -> int:
    """Where to start looking for a free vip (see `free_vip`)."""
    return secrets.randbelow(SERVICE_VIP_NETWORK.num_addresses)


def validate_files(files: Sequence[SourceFile], state: MeshState) -> list[Resource]:
    """Every resource of every file, or ResourceValidationError with all the issues."""
    issues: list[ValidationIssue] = []
    resources: list[Resource] = []
    for file in files:
        try:
            resources.extend(load_documents(file.content, source=file.name))
        except ResourceValidationError as exc:
            issues.extend(exc.issues)
    issues.extend(duplicate_issues(resources))
    if issues:
        raise ResourceValidationError(issues)
    issues = check_references(
        resources,
        state.exists,
        _stored_policies(resources, state),
        _stored_gateways(resources, state),
    )
    if issues:
        raise ResourceValidationError(issues)
    return resources


def _stored_policies(resources: Sequence[Resource], state: MeshState) -> list[Any]:
    """The stored DestinationPolicies of the services the batch sends traffic to: the
    reference check needs their subsets, and only theirs (not the whole mesh's)."""
    targets: set[tuple[str, str]] = set()
    for resource in resources:
        if resource.kind not in ("HTTPRoute", "TCPRoute"):
            continue
        ns = resource.metadata.namespace
        for rule in resource.spec.rules:  # type: ignore[attr-defined]
            refs = list(rule.backend_refs)
            mirror = getattr(rule, "mirror", None)
            if mirror is not None:
                refs.append(mirror.backend_ref)
            targets.update((ref.namespace or ns, ref.name) for ref in refs)
    found = (state.destination_policy_for(ns, name) for ns, name in sorted(targets))
    return [policy for policy in found if policy is not None]


def _stored_gateways(resources: Sequence[Resource], state: MeshState) -> list[Any]:
    """The stored Gateways the batch's routes attach to by port: the reference check
    needs their listeners' ports."""
    found = []
    for resource in resources:
        if resource.kind not in ("HTTPRoute", "TCPRoute"):
            continue
        for parent in resource.spec.parent_refs:  # type: ignore[attr-defined]
            if parent.kind == "Gateway" and parent.port is not None:
                ns = parent.namespace or resource.metadata.namespace
                gateway = state.get("Gateway", ns, parent.name)
                if gateway is not None:
                    found.append(gateway)
    return found


async def apply_resources(
    store: Store,
    resources: Sequence[Resource],
    *,
    dry_run: bool = False,
    random_start: Callable[[], int] = _random_host,
) -> ApplyResult:
    """Write `resources` in one transaction; Services without `vip` get one (vips.py).

    Raises `ResourceValidationError` when a Service's `vip` is held by another."""
    for _ in range(MAX_CONFLICT_RETRIES):
        current = {resource.key: await store.get(resource.key) for resource in resources}
        compares = [Compare(key, kv.mod_revision if kv else 0) for key, kv in current.items()]
        # A fresh plan on every attempt: the addresses a failed attempt picked are not
        # the user's, and may be someone else's by now.
        planned, compares_vips, ops = await _with_vips(store, resources, current, random_start)
        compares += compares_vips
        results: list[AppliedResource] = []
        for resource in planned:
            value = resource.to_json_bytes()
            kv = current[resource.key]
            action: Action
            if kv is None:
                action = "created"
            elif kv.value == value:
                action = "unchanged"
            else:
                action = "configured"
            if action != "unchanged":
                ops.append(Put(resource.key, value))
            meta = resource.metadata
            changes: tuple[tuple[str, Any, Any], ...] = ()
            if action == "configured" and kv is not None:
                changes = tuple(changed_fields(json.loads(kv.value), json.loads(value)))
            results.append(
                AppliedResource(resource.kind, meta.namespace, meta.name, action, changes)
            )
        if dry_run or not ops:
            return ApplyResult(await store.revision(), results)
        outcome = await store.txn(compares, ops)
        if outcome.succeeded:
            return ApplyResult(outcome.revision, results)
    raise ApplyConflict("apply")


async def _with_vips(
    store: Store,
    resources: Sequence[Resource],
    current: Mapping[str, KeyValue | None],
    random_start: Callable[[], int],
) -> tuple[list[Resource], list[Compare], list[TxnOp]]:
    """`resources` with every Service's vip filled in, and the compares and writes of
    the claims that go with them."""
    services = [r for r in resources if isinstance(r, Service)]
    if not services:
        return list(resources), [], []
    stored = {s.key: stored_vip(kv.value) for s in services if (kv := current[s.key])}
    plan = plan_vips(services, stored, await read_claims(store), random_start)
    return [plan.services.get(r.key, r) for r in resources], plan.compares, list(plan.ops)


async def read_claims(store: Store) -> dict[str, Claim]:
    listing = await store.range(VIP_CLAIM_PREFIX)
    return {
        kv.key.removeprefix(VIP_CLAIM_PREFIX): Claim(kv.value.decode(), kv.mod_revision)
        for kv in listing.kvs
    }


async def delete_resource(store: Store, key: str) -> int | None:
    """Delete the resource at `key` (and a Service's vip claim with it, freeing the
    address); the revision of the delete, or None if there was nothing to delete."""
    for _ in range(MAX_CONFLICT_RETRIES):
        current = await store.get(key)
        if current is None:
            return None
        compares = [Compare(key, current.mod_revision)]
        ops: list[TxnOp] = [Delete(key)]
        vip = stored_vip(current.value) if key.startswith(kind_prefix("Service")) else None
        claim = await store.get(claim_key(vip)) if vip is not None else None
        if claim is not None and claim.value == key.encode():
            compares.append(Compare(claim.key, claim.mod_revision))
            ops.append(Delete(claim.key))
        outcome = await store.txn(compares, ops)
        if outcome.succeeded:
            return outcome.revision
    raise ApplyConflict("delete")


async def assign_missing_vips(
    store: Store, *, random_start: Callable[[], int] = _random_host
) -> list[str]:
    """Give a vip to every stored Service without one, and claim the vip of any whose
    claim is missing: Services written before the controller allocated addresses, or
    put straight into the store. Each is written only if unchanged since it was read,
    so a concurrent apply is never overwritten. Returns what could not be repaired,
    one sentence each."""
    failures: list[str] = []
    for kv in (await store.range(kind_prefix("Service"))).kvs:
        for _ in range(MAX_CONFLICT_RETRIES):
            current = await store.get(kv.key)
            if current is None:
                break
            claims = await read_claims(store)
            vip = stored_vip(current.value)
            if vip is not None and vip in claims and claims[vip].owner == kv.key:
                break
            service = from_stored(kv.key, current.value)
            assert isinstance(service, Service)
            try:
                plan = plan_vips([service], {kv.key: vip}, claims, random_start)
            except (ResourceValidationError, VipsExhausted) as exc:
                failures.append(str(exc))
                break
            compares = [Compare(kv.key, current.mod_revision), *plan.compares]
            ops = [Put(kv.key, plan.services[kv.key].to_json_bytes()), *plan.ops]
            if (await store.txn(compares, ops)).succeeded:
                break
    return failures
