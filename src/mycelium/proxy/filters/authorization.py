"""AuthorizationPolicy on the serving side, in Istio's order, without I/O.

For a workload's compiled policies (`cfg.AuthzPolicy`, from `InboundConfig`):

1. a matching DENY policy denies;
2. with no ALLOW policy for the workload, the request is allowed;
3. a matching ALLOW policy allows;
4. otherwise the request is denied.

AUDIT policies never decide; the ones that match are named in the decision, for the
log. A policy matches when any of its rules does; a rule matches when any `from`, any
`to` and every `when` match (an absent list matches everything); in each source or
operation every field given must match and every `not` field must not. Principals are
peer SPIFFE IDs without the scheme (`cluster.local/ns/shop/sa/reviews`); "*" among
principals means "any authenticated peer", so a plaintext peer matches no principal.

A plain TCP connection has no method, path or headers. A rule that needs them cannot
be judged, and the answer errs on the side of refusing: in an ALLOW policy such a rule
matches nothing, in a DENY policy its HTTP-only parts are ignored (it denies more), as
Istio does. A `when` key this proxy cannot evaluate is treated the same way.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import Denied

log = logging.getLogger("mycelium.proxy.authz")

SPIFFE_SCHEME = "spiffe://"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """What authorization looks at: the peer, and for HTTP the request itself."""

    source_ip: str
    port: int  # the port the client asked for (the service port)
    principal: str | None = None  # the peer's SPIFFE ID (spiffe://...), when mTLS
    destination_ip: str | None = None
    method: str | None = None  # None: a TCP connection
    path: str | None = None  # without the query
    headers: Mapping[str, str] = field(default_factory=dict)  # lowercased names
    sni: str | None = None

    @property
    def is_http(self) -> bool:
        return self.method is not None

    @property
    def principal_name(self) -> str | None:
        """The principal as policies write it: the SPIFFE ID without its scheme."""
        return self.principal[len(SPIFFE_SCHEME) :] if self.principal else None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str | None  # the policy that decided ("<ns>/<name>"), None: no policy did
    audited: tuple[str, ...] = ()  # AUDIT policies that matched


def _wildcard(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _any_wildcard(patterns: Sequence[str], value: str | None) -> bool:
    return value is not None and any(_wildcard(p, value) for p in patterns)


def _in_blocks(blocks: Sequence[str], address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(block, strict=False) for block in blocks)


def _member(values: Sequence[object], value: object) -> bool:
    return value in values


def _field[T](
    positive: Sequence[T], negative: Sequence[T], value: object, test: Callable[..., bool]
) -> bool:
    """A field with its `not` form: if values are given, `value` must pass `test` against
    them; if negated values are given, it must not pass against those."""
    if positive and not test(positive, value):
        return False
    return not (negative and test(negative, value))


class Authorizer:
    """Decides requests for one workload's policies (rebuilt when its config changes)."""

    def __init__(self, policies: Sequence[cfg.AuthzPolicy]) -> None:
        self.deny = [p for p in policies if p.action == "DENY"]
        self.allow = [p for p in policies if p.action == "ALLOW"]
        self.audit = [p for p in policies if p.action == "AUDIT"]
        # Without any policy every request is allowed: callers skip building requests.
        self.active = bool(policies)

    def enforce(self, request: AccessRequest, counters: MutableMapping[str, int]) -> None:
        """Decide, count (`authz_allowed`, `authz_denied`), log audits and denials, and
        raise `Denied` (403, reason `denied`) for a refused request."""
        decision = self.decide(request)
        for name in decision.audited:
            log.info(
                "audit %s: %s %s from %s (%s)",
                name,
                request.method or "TCP",
                request.path or request.port,
                request.principal or request.source_ip,
                "allowed" if decision.allowed else "denied",
            )
        if decision.allowed:
            counters["authz_allowed"] += 1
            return
        counters["authz_denied"] += 1
        why = f"policy {decision.policy}" if decision.policy else "no ALLOW policy matches"
        peer = request.principal or request.source_ip
        what = f"{request.method} {request.path}" if request.is_http else f"port {request.port}"
        raise Denied(f"{peer} may not reach {what}: {why}")

    def decide(self, request: AccessRequest) -> Decision:
        audited = tuple(p.name for p in self.audit if self._matches(p, request, "DENY"))
        for policy in self.deny:
            if self._matches(policy, request, "DENY"):
                return Decision(False, policy.name, audited)
        if not self.allow:
            return Decision(True, None, audited)
        for policy in self.allow:
            if self._matches(policy, request, "ALLOW"):
                return Decision(True, policy.name, audited)
        return Decision(False, None, audited)

    # --- matching --------------------------------------------------------------------------

    def _matches(
        self, policy: cfg.AuthzPolicy, request: AccessRequest, mode: Literal["ALLOW", "DENY"]
    ) -> bool:
        return any(self._rule(rule, request, mode) for rule in policy.rules)

    def _rule(self, rule: cfg.AuthzRule, request: AccessRequest, mode: str) -> bool:
        if rule.sources and not any(self._source(s, request) for s in rule.sources):
            return False
        if rule.operations and not any(self._operation(o, request, mode) for o in rule.operations):
            return False
        return all(self._condition(c, request, mode) for c in rule.conditions)

    @staticmethod
    def _source(source: cfg.SourceMatch, request: AccessRequest) -> bool:
        name = request.principal_name
        return (
            _field(source.principals, source.not_principals, name, _any_wildcard)
            and _field(source.namespaces, source.not_namespaces, _namespace_of(name), _any_wildcard)
            and _field(source.ip_blocks, source.not_ip_blocks, request.source_ip, _in_blocks)
        )

    @staticmethod
    def _operation(operation: cfg.OperationMatch, request: AccessRequest, mode: str) -> bool:
        if not _field(operation.ports, operation.not_ports, request.port, _member):
            return False
        if not request.is_http:
            if operation.methods or operation.not_methods or operation.paths or operation.not_paths:
                return mode == "DENY"  # cannot be judged: refuse more, never allow more
            return True
        return _field(operation.methods, operation.not_methods, request.method, _member) and _field(
            operation.paths, operation.not_paths, request.path, _any_wildcard
        )

    @staticmethod
    def _condition(condition: cfg.ConditionMatch, request: AccessRequest, mode: str) -> bool:
        key = condition.key
        value: str | None
        test: Callable[[Sequence[str], str | None], bool] = _any_wildcard
        if key.startswith("request.headers["):
            if not request.is_http:
                return mode == "DENY"
            value = request.headers.get(key[len("request.headers[") : -1].lower())
        elif key in ("source.ip", "remote.ip"):
            value, test = request.source_ip, _in_blocks
        elif key == "destination.ip":
            value, test = request.destination_ip, _in_blocks
        elif key == "destination.port":
            value = str(request.port)
        elif key == "source.principal":
            value = request.principal_name
        elif key == "source.namespace":
            value = _namespace_of(request.principal_name)
        elif key == "connection.sni":
            value = request.sni
        else:
            return mode == "DENY"
        return _field(condition.values, condition.not_values, value, test)


def _namespace_of(principal: str | None) -> str | None:
    """`td/ns/<namespace>/sa/<sa>` -> <namespace>."""
    if not principal:
        return None
    parts = principal.split("/")
    if len(parts) == 5 and parts[1] == "ns":
        return parts[2]
    return None


def http_request(
    source_ip: str,
    port: int,
    method: bytes,
    target: bytes,
    fields: Sequence[tuple[bytes, bytes]],
    *,
    principal: str | None = None,
) -> AccessRequest:
    """An HTTP request as authorization sees it (header names lowercased, the first
    value of each, the path without its query)."""
    headers: dict[str, str] = {}
    for name, value in fields:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    path = target.split(b"?", 1)[0].decode("latin-1")
    return AccessRequest(
        source_ip=source_ip,
        port=port,
        principal=principal,
        method=method.decode("latin-1"),
        path=path,
        headers=headers,
    )
