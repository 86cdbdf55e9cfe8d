"""PeerAuthentication and AuthorizationPolicy: who may talk to a workload, and how.

Shapes follow Istio's security API. A policy without a selector applies to every
workload of its namespace. Invariants checked here: `portLevelMtls` only with a
selector (as in Istio: a namespace-wide per-port rule is ambiguous); ip blocks parse;
wildcards in principals, namespaces and paths are a single `*` at the start (suffix
match) or the end (prefix match), or `*` alone; every source, operation and condition
says something (an empty one would silently match everything or nothing).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, Strict, WithJsonSchema, model_validator

from mycelium.api.meta import ApiModel, Resource
from mycelium.api.scalars import IPBlock, Labels, PortNumber, check_cidr, check_header_name

# JSON object keys are strings, so a port used as a key must also be read from "8080":
# otherwise a resource saved as JSON could not be applied again.
type PortKey = Annotated[
    int,
    Strict(False),
    Field(ge=1, le=65535),
    WithJsonSchema({"type": "string", "pattern": "^[1-9][0-9]{0,4}$"}),
]
type MtlsMode = Literal["STRICT", "PERMISSIVE", "DISABLE"]
type AuthorizationAction = Literal["ALLOW", "DENY", "AUDIT"]


class WorkloadSelector(ApiModel):
    match_labels: Labels = {}
    """The workloads whose labels include all of these; empty selects every workload."""


class PeerMtls(ApiModel):
    mode: MtlsMode
    """STRICT: mTLS only. PERMISSIVE: mTLS and plaintext. DISABLE: plaintext only."""


class PeerAuthenticationSpec(ApiModel):
    selector: WorkloadSelector | None = None
    """Which workloads; all of the namespace when absent."""
    mtls: PeerMtls
    port_level_mtls: dict[PortKey, PeerMtls] = {}
    """Overrides for single workload ports (needs a selector)."""

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> Self:
        if self.port_level_mtls and (self.selector is None or not self.selector.match_labels):
            raise ValueError(
                "portLevelMtls applies to the ports of particular workloads: add a selector "
                "with matchLabels"
            )
        return self


class PeerAuthentication(Resource):
    """Whether workloads accept plaintext, mTLS, or both from their peers."""

    kind: Literal["PeerAuthentication"] = "PeerAuthentication"
    spec: PeerAuthenticationSpec


# --- authorization -------------------------------------------------------------------------


def _check_wildcard(value: str) -> str:
    if not value:
        raise ValueError("an empty string matches nothing: remove it or write '*'")
    if value != "*" and (value.count("*") > 1 or "*" in value[1:-1]):
        raise ValueError(
            f"{value!r}: '*' may appear once, alone, at the start (suffix match) or at the "
            "end (prefix match)"
        )
    return value


def _check_path_pattern(value: str) -> str:
    _check_wildcard(value)
    if not value.startswith(("/", "*")):
        raise ValueError(f"{value!r} is not a path: it must start with '/' (or '*')")
    return value


type Wildcard = Annotated[str, AfterValidator(_check_wildcard)]
"""Exact, "*" (anything), "prefix*" or "*suffix"."""
type PathPattern = Annotated[str, AfterValidator(_check_path_pattern)]
type Method = Annotated[str, Field(pattern=r"^[A-Z]+$")]


class Source(ApiModel):
    """Where a request comes from; every field given must match (negations must not)."""

    principals: list[Wildcard] = []
    """Peer identities without the scheme: "cluster.local/ns/bookinfo/sa/productpage"."""
    not_principals: list[Wildcard] = []
    namespaces: list[Wildcard] = []
    not_namespaces: list[Wildcard] = []
    ip_blocks: list[IPBlock] = []
    not_ip_blocks: list[IPBlock] = []

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if not any(self.model_dump().values()):
            raise ValueError(
                "an empty source would match every peer: set principals, namespaces or "
                "ipBlocks (or their not- forms), or remove this entry"
            )
        return self


class Operation(ApiModel):
    """What a request asks for; every field given must match (negations must not)."""

    methods: list[Method] = []
    not_methods: list[Method] = []
    paths: list[PathPattern] = []
    not_paths: list[PathPattern] = []
    ports: list[PortNumber] = []
    not_ports: list[PortNumber] = []

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if not any(self.model_dump().values()):
            raise ValueError(
                "an empty operation would match every request: set methods, paths or "
                "ports (or their not- forms), or remove this entry"
            )
        return self


class RuleFrom(ApiModel):
    source: Source


class RuleTo(ApiModel):
    operation: Operation


# The attributes a `when` condition can test, as Istio names them.
CONDITION_KEYS = (
    "request.headers[<name>]",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
_HEADER_KEY = re.compile(r"request\.headers\[(?P<name>[^\]]+)\]")
_IP_KEYS = frozenset({"source.ip", "remote.ip", "destination.ip"})


def _check_condition_key(key: str) -> str:
    if header := _HEADER_KEY.fullmatch(key):
        check_header_name(header["name"])
    elif key not in CONDITION_KEYS:
        raise ValueError(
            f"unsupported condition key {key!r}; use one of: {', '.join(CONDITION_KEYS)}"
        )
    return key


class Condition(ApiModel):
    key: Annotated[str, AfterValidator(_check_condition_key)]
    """An attribute such as "request.headers[x-user]" or "source.ip"."""
    values: list[Wildcard] = []
    not_values: list[Wildcard] = []

    @model_validator(mode="after")
    def _values_fit_key(self) -> Self:
        if not self.values and not self.not_values:
            raise ValueError(f"condition on {self.key} needs values or notValues")
        for value in [*self.values, *self.not_values]:
            if self.key in _IP_KEYS:
                check_cidr(value)
            elif self.key == "destination.port" and not (
                value.isdigit() and 1 <= int(value) <= 65535
            ):
                raise ValueError(f"destination.port values are port numbers, got {value!r}")
        return self


class AuthorizationRule(ApiModel):
    """Matches when any `from`, any `to` and every `when` match (absent lists match all)."""

    from_: list[RuleFrom] = []
    to: list[RuleTo] = []
    when: list[Condition] = []


class AuthorizationPolicySpec(ApiModel):
    selector: WorkloadSelector | None = None
    """Which workloads; all of the namespace when absent."""
    action: AuthorizationAction = "ALLOW"
    rules: list[AuthorizationRule] = []
    """With ALLOW, no rules allow nothing: the policy denies every request."""


class AuthorizationPolicy(Resource):
    """Allow, deny or audit requests by peer identity, namespace, address, method, path, port."""

    kind: Literal["AuthorizationPolicy"] = "AuthorizationPolicy"
    spec: AuthorizationPolicySpec
