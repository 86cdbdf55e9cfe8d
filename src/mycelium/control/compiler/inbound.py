"""The inbound bundle: a proxy's own workload — the ports it serves with their mTLS
modes, the authorization and rate-limit policies that select it, and its namespace's
egress policy. Every proxy role that serves a workload receives it.

Also where a workload's PeerAuthentication is resolved (`peer_authentication`): the
serving side enforces it here, and callers read it to know which ports take plaintext.

Pure, like the rest of the compiler.
"""

from __future__ import annotations

from typing import Any

from mycelium.control.compiler.common import (
    DEFAULT_TRUST_DOMAIN,
    Bundle,
    route_match,
    spiffe_id,
)
from mycelium.control.compiler.egress import namespace_egress
from mycelium.control.compiler.topics import policy_topic, service_topic, workload_topic
from mycelium.control.state import MeshState, labels_match, service_key
from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import NodeInfo


def compile_inbound(
    state: MeshState, node: NodeInfo, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> Bundle:
    """The `inbound` entry of the proxy `node`: what its workload serves, and how."""
    bundle = Bundle()
    ns = node.namespace
    workload = node.workload or node.id
    bundle.topics.update({policy_topic(ns), workload_topic(ns, workload)})
    ports: list[cfg.InboundPort] = []
    peer_auth = peer_authentication(state, ns, node.labels)
    egress = namespace_egress(state, ns)  # its egress policy: a policy topic
    for service in state.services_selecting(ns, node.labels):
        svc_name = service_key(ns, service.metadata.name)
        bundle.topics.add(service_topic(svc_name))
        for p in service.spec.ports:
            mode = peer_auth.get(p.port, peer_auth.get(0, "PERMISSIVE"))
            ports.append(
                cfg.InboundPort(
                    port=p.port,
                    target_port=p.target_port or p.port,
                    service=svc_name,
                    protocol=p.protocol,
                    opaque=p.opaque,
                    mtls=mode,
                )
            )
    ports.sort(key=lambda p: (p.port, p.service))
    bundle.add(
        "inbound",
        cfg.InboundConfig(
            workload=f"{ns}/{workload}",
            namespace=ns,
            identity=spiffe_id(ns, node.service_account, trust_domain),
            ports=ports,
            authorization=_authorization(state, ns, node.labels),
            rate_limits=_rate_limits(state, ns, node.labels),
            egress_policy=egress.policy,
        ),
    )
    return bundle


def _selects(selector: Any, labels: dict[str, str]) -> bool:
    """A policy without a selector applies to the whole namespace."""
    if selector is None or not selector.match_labels:
        return True
    return labels_match(selector.match_labels, labels)


def peer_authentication(
    state: MeshState, ns: str, labels: dict[str, str]
) -> dict[int, cfg.MtlsMode]:
    """Port -> mTLS mode, port 0 meaning every port. The most specific policy wins:
    workload-selecting over namespace-wide; then port-level over the policy's default."""
    namespace_wide: dict[int, cfg.MtlsMode] = {}
    workload_specific: dict[int, cfg.MtlsMode] = {}
    for pa in sorted(state.of_kind("PeerAuthentication", ns), key=lambda r: r.metadata.name):
        selector = pa.spec.selector
        target = (
            workload_specific if selector is not None and selector.match_labels else namespace_wide
        )
        if not _selects(selector, labels):
            continue
        if pa.spec.mtls is not None:
            target.setdefault(0, pa.spec.mtls.mode)
        for port, setting in (pa.spec.port_level_mtls or {}).items():
            target.setdefault(int(port), setting.mode)
    merged = dict(namespace_wide)
    merged.update(workload_specific)
    return merged


def _authorization(state: MeshState, ns: str, labels: dict[str, str]) -> list[cfg.AuthzPolicy]:
    policies = []
    for ap in sorted(state.of_kind("AuthorizationPolicy", ns), key=lambda r: r.metadata.name):
        if not _selects(ap.spec.selector, labels):
            continue
        rules = []
        for rule in ap.spec.rules:
            rules.append(
                cfg.AuthzRule(
                    sources=[cfg.SourceMatch(**_plain(s.source)) for s in (rule.from_ or [])],
                    operations=[cfg.OperationMatch(**_plain(o.operation)) for o in (rule.to or [])],
                    conditions=[cfg.ConditionMatch(**_plain(w)) for w in (rule.when or [])],
                )
            )
        policies.append(
            cfg.AuthzPolicy(name=f"{ns}/{ap.metadata.name}", action=ap.spec.action, rules=rules)
        )
    return policies


def _plain(model: Any) -> dict[str, Any]:
    """An API model's fields as JSON-ready values, keyed by their Python names."""
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


def _rate_limits(state: MeshState, ns: str, labels: dict[str, str]) -> list[cfg.RateLimit]:
    """The buckets this workload enforces on what it serves.

    A policy on a Service counts every request to the Service's ports. A policy on an
    HTTPRoute counts the requests its rules match: with scope "workload" in one bucket,
    with scope "route" in one bucket per rule.
    """
    selected = {s.metadata.name: s for s in state.services_selecting(ns, labels)}
    limits = []
    for rl in sorted(state.of_kind("RateLimitPolicy", ns), key=lambda r: r.metadata.name):
        target, limit = rl.spec.target_ref, rl.spec.limit
        common = {
            "scope": rl.spec.scope,
            "target": f"{target.kind}/{ns}/{target.name}",
            "requests": limit.requests,
            "per_seconds": limit.per,
            "burst": limit.burst if limit.burst is not None else limit.requests,
        }
        name = f"{ns}/{rl.metadata.name}"
        if target.kind == "Service":
            service = selected.get(target.name)
            if service is not None:
                ports = [p.port for p in service.spec.ports]
                limits.append(cfg.RateLimit(name=name, ports=ports, **common))
            continue
        route = state.get("HTTPRoute", ns, target.name)
        if route is None:
            continue
        ports = sorted(
            {
                p.port
                for parent in route.spec.parent_refs
                if parent.kind == "Service" and parent.name in selected
                for p in selected[parent.name].spec.ports
            }
        )
        if not ports:
            continue
        rules = [[route_match(m) for m in rule.matches] for rule in route.spec.rules]
        if rl.spec.scope == "route":
            for index, matches in enumerate(rules):
                limits.append(
                    cfg.RateLimit(name=f"{name}#{index}", ports=ports, matches=matches, **common)
                )
        else:
            every = [m for matches in rules for m in matches]
            if any(not matches for matches in rules):
                every = []  # a rule without matches takes every request
            limits.append(cfg.RateLimit(name=name, ports=ports, matches=every, **common))
    return limits
