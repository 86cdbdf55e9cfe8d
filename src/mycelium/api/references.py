"""Cross-resource checks: every name a resource refers to must exist.

`check_references` looks at a batch about to be applied against what is already stored,
without doing any I/O itself: the caller answers `exists(kind, namespace, name)` for the
store and passes the stored DestinationPolicies (for subsets). Resources in the batch
count as existing, and a DestinationPolicy in the batch replaces the stored one of the
same name. Checked:

- HTTPRoute and TCPRoute: each parentRef names an existing Service or Gateway (and,
  for a Gateway with a `port`, one of its listeners' ports); each backendRef and
  mirror names an existing Service, and its `subset`, if any, is defined by a
  DestinationPolicy for that Service;
- RateLimitPolicy: its targetRef names an existing Service or HTTPRoute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from mycelium.api.errors import ValidationIssue
from mycelium.api.gateway import Gateway
from mycelium.api.meta import Resource
from mycelium.api.routing import BackendRef, HTTPRoute, MirrorBackendRef, ParentRef, TCPRoute
from mycelium.api.traffic_policy import DestinationPolicy, RateLimitPolicy

type Exists = Callable[[str, str, str], bool]
"""exists(kind, namespace, name): whether the store holds that resource."""


def check_references(
    resources: Sequence[Resource],
    exists: Exists,
    stored_policies: Iterable[DestinationPolicy] = (),
    stored_gateways: Iterable[Gateway] = (),
) -> list[ValidationIssue]:
    """Every dangling reference in `resources`, as issues located in their source files.

    `stored_policies` are the DestinationPolicies already in the store, `stored_gateways`
    the Gateways (for their listeners' ports); those with the same key as one in
    `resources` are ignored in favour of the new version.
    """
    checker = _ReferenceChecker(resources, exists, stored_policies, stored_gateways)
    issues: list[ValidationIssue] = []
    for resource in resources:
        if isinstance(resource, HTTPRoute | TCPRoute):
            issues.extend(checker.route(resource))
        elif isinstance(resource, RateLimitPolicy):
            issues.extend(checker.rate_limit(resource))
    return issues


class _ReferenceChecker:
    def __init__(
        self,
        batch: Sequence[Resource],
        exists: Exists,
        stored_policies: Iterable[DestinationPolicy],
        stored_gateways: Iterable[Gateway] = (),
    ) -> None:
        self._exists = exists
        self._batch = {(r.kind, r.metadata.namespace, r.metadata.name) for r in batch}
        gateways = [*stored_gateways, *(r for r in batch if isinstance(r, Gateway))]
        self._gateways = {(g.metadata.namespace, g.metadata.name): g for g in gateways}
        batch_keys = {r.key for r in batch}
        policies = [p for p in stored_policies if p.key not in batch_keys]
        policies += [r for r in batch if isinstance(r, DestinationPolicy)]
        self._subsets: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._has_policy: set[tuple[str, str]] = set()
        for policy in policies:
            service = policy.service()
            self._has_policy.add(service)
            self._subsets[service].update(subset.name for subset in policy.spec.subsets)

    def known(self, kind: str, namespace: str, name: str) -> bool:
        return (kind, namespace, name) in self._batch or self._exists(kind, namespace, name)

    def route(self, route: HTTPRoute | TCPRoute) -> list[ValidationIssue]:
        issues: list[ValidationIssue] = []
        for i, parent in enumerate(route.spec.parent_refs):
            issues += self._parent(route, f"spec.parentRefs[{i}]", parent)
        for path, backend in _backends(route):
            issues += self._backend(route, path, backend)
        return issues

    def rate_limit(self, policy: RateLimitPolicy) -> list[ValidationIssue]:
        target = policy.spec.target_ref
        namespace = policy.metadata.namespace
        if self.known(target.kind, namespace, target.name):
            return []
        return [
            policy.issue(
                "spec.targetRef.name",
                f"{target.kind} {namespace}/{target.name} does not exist: apply it together "
                "with this policy or before it, or fix the name",
            )
        ]

    def _parent(self, route: Resource, path: str, parent: ParentRef) -> list[ValidationIssue]:
        namespace = parent.namespace or route.metadata.namespace
        if self.known(parent.kind, namespace, parent.name):
            gateway = self._gateways.get((namespace, parent.name))
            if parent.kind != "Gateway" or parent.port is None or gateway is None:
                return []
            ports = sorted({listener.port for listener in gateway.spec.listeners})
            if parent.port in ports:
                return []
            return [
                route.issue(
                    f"{path}.port",
                    f"Gateway {namespace}/{parent.name} has no listener on port {parent.port} "
                    f"(its ports: {', '.join(map(str, ports))}): fix the port, or remove it "
                    "to attach to every listener",
                )
            ]
        return [
            route.issue(
                f"{path}.name",
                f"{parent.kind} {namespace}/{parent.name} does not exist: apply it together "
                f"with this {route.kind} or before it, or fix the name",
            )
        ]

    def _backend(
        self, route: Resource, path: str, backend: BackendRef | MirrorBackendRef
    ) -> list[ValidationIssue]:
        name, subset = backend.name, backend.subset
        namespace = backend.namespace or route.metadata.namespace
        if not self.known("Service", namespace, name):
            return [
                route.issue(
                    f"{path}.name",
                    f"Service {namespace}/{name} does not exist: apply it together with this "
                    f"{route.kind} or before it, or fix the name",
                )
            ]
        if subset is None or subset in self._subsets.get((namespace, name), set()):
            return []
        service = (namespace, name)
        if service not in self._has_policy:
            why = "no DestinationPolicy exists for it"
        elif defined := sorted(self._subsets[service]):
            why = f"its DestinationPolicy defines only: {', '.join(defined)}"
        else:
            why = "its DestinationPolicy defines no subsets"
        return [
            route.issue(
                f"{path}.subset",
                f"subset {subset!r} of Service {namespace}/{name} is not defined ({why}): "
                "add it to the DestinationPolicy's subsets, or fix the name",
            )
        ]


def _backends(route: HTTPRoute | TCPRoute) -> list[tuple[str, BackendRef | MirrorBackendRef]]:
    """Every Service a route sends traffic to, with the path of the reference."""
    found: list[tuple[str, BackendRef | MirrorBackendRef]] = []
    if isinstance(route, HTTPRoute):
        for r, rule in enumerate(route.spec.rules):
            found += [
                (f"spec.rules[{r}].backendRefs[{b}]", ref)
                for b, ref in enumerate(rule.backend_refs)
            ]
            if rule.mirror is not None:
                found.append((f"spec.rules[{r}].mirror.backendRef", rule.mirror.backend_ref))
    else:
        for r, tcp_rule in enumerate(route.spec.rules):
            found += [
                (f"spec.rules[{r}].backendRefs[{b}]", ref)
                for b, ref in enumerate(tcp_rule.backend_refs)
            ]
    return found
