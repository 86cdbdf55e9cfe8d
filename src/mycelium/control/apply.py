"""Apply: validate a batch of files as a whole, then write it in one store transaction.

Nothing is half-applied: every file is parsed and validated, cross-references are
checked against the batch and the store, and only then is one transaction written, with
a compare on every key's revision so a concurrent writer cannot be overwritten blindly
(on a conflict the batch is re-read and retried). An acknowledged apply is durable: the
store acknowledges only what it committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mycelium.api import Resource
from mycelium.api.errors import ResourceValidationError, ValidationIssue
from mycelium.api.loading import duplicate_issues, load_documents
from mycelium.api.references import check_references
from mycelium.control.state import MeshState
from mycelium.store import Compare, Put, Store, StoreError

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


@dataclass(frozen=True, slots=True)
class ApplyResult:
    revision: int
    results: list[AppliedResource]


class ApplyConflict(StoreError):
    def __init__(self) -> None:
        super().__init__(
            "the resources kept changing underneath this apply; nothing was written — retry"
        )


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
    store: Store, resources: Sequence[Resource], *, dry_run: bool = False
) -> ApplyResult:
    for _ in range(MAX_CONFLICT_RETRIES):
        compares: list[Compare] = []
        ops: list[Put] = []
        results: list[AppliedResource] = []
        for resource in resources:
            value = resource.to_json_bytes()
            current = await store.get(resource.key)
            action: Action
            if current is None:
                action = "created"
            elif current.value == value:
                action = "unchanged"
            else:
                action = "configured"
            compares.append(Compare(resource.key, current.mod_revision if current else 0))
            if action != "unchanged":
                ops.append(Put(resource.key, value))
            meta = resource.metadata
            results.append(AppliedResource(resource.kind, meta.namespace, meta.name, action))
        if dry_run or not ops:
            return ApplyResult(await store.revision(), results)
        outcome = await store.txn(compares, ops)
        if outcome.succeeded:
            return ApplyResult(outcome.revision, results)
    raise ApplyConflict()
