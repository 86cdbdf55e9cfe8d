"""HTTPRoute and TCPRoute: where requests to a Service (or through a Gateway) go.

The shapes follow the Gateway API, with Istio's per-rule extras (timeout, retries, fault
injection, mirroring). Invariants checked here, so the compiler can rely on them:

- regular expressions (path, header and query matches) compile with Python's `re`;
- every backend weight is >= 0 and a rule's weights add up to more than 0;
- a rule without backends is only allowed when it answers every request itself, i.e. it
  has a fault abort at 100 %;
- `replacePrefixMatch` is only used on rules whose matches are all path prefixes;
- `retriableStatusCodes` is given if and only if `retryOn` names "retriable-status-codes".
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mycelium.api.meta import ApiModel, Resource, repeated
from mycelium.api.scalars import (
    DnsLabel,
    Duration,
    HeaderName,
    HeaderValue,
    Hostname,
    HttpStatus,
    Percentage,
    PortNumber,
)

# Gateway API's bound on a backend weight; larger numbers are a typo, not a plan.
MAX_BACKEND_WEIGHT = 1_000_000
# More than this many retries turns one failure into a retry storm (Linkerd caps its
# budgets for the same reason); use a retry budget on the DestinationPolicy instead.
MAX_RETRY_ATTEMPTS = 10

type PathMatchType = Literal["Exact", "PathPrefix", "RegularExpression"]
type ValueMatchType = Literal["Exact", "RegularExpression"]
type HttpMethod = Literal[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"
]
type RetryOn = Literal[
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-status-codes", "refused-stream"
]


def check_regex(pattern: str) -> str:
    """`pattern` if Python's `re` compiles it; a ValueError naming the problem if not."""
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None
    return pattern


# --- references ----------------------------------------------------------------------------


class ParentRef(ApiModel):
    """What a route attaches to: the Service whose traffic it routes, or a Gateway."""

    kind: Literal["Service", "Gateway"] = "Service"
    name: DnsLabel
    namespace: DnsLabel | None = None
    """Defaults to the route's namespace."""
    port: PortNumber | None = None
    """Only traffic to this port of the parent; all ports when absent."""


class BackendRef(ApiModel):
    """A Service (optionally one subset of it) that receives a share of the traffic."""

    name: DnsLabel
    """The Service's name."""
    namespace: DnsLabel | None = None
    """Defaults to the route's namespace."""
    port: PortNumber | None = None
    """The Service port; defaults to the port the request came in on."""
    subset: DnsLabel | None = None
    """A subset defined by a DestinationPolicy for this Service."""
    weight: Annotated[int, Field(ge=0, le=MAX_BACKEND_WEIGHT)] = 1
    """Relative share of the rule's traffic; 0 sends none (but keeps the backend listed)."""


def check_weights(backends: list[BackendRef]) -> list[BackendRef]:
    """Backends whose weights add up to more than zero (when there are any)."""
    if backends and sum(backend.weight for backend in backends) == 0:
        raise ValueError(
            "the backend weights add up to 0, so no request could be sent anywhere: "
            "give at least one backend a positive weight"
        )
    return backends


# --- matches -------------------------------------------------------------------------------


class PathMatch(ApiModel):
    type: PathMatchType = "PathPrefix"
    value: str = "/"
    """An absolute path, or for RegularExpression a pattern matched against the whole path."""

    @field_validator("value")
    @classmethod
    def _value_fits_type(cls, value: str, info: ValidationInfo) -> str:
        match_type = info.data.get("type")
        if match_type == "RegularExpression":
            return check_regex(value)
        if match_type is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path: it must start with '/'")
        return value


class QueryParamMatch(ApiModel):
    name: Annotated[str, Field(min_length=1)]
    type: ValueMatchType = "Exact"
    value: str
    """The exact value, or for RegularExpression a pattern matched against the whole value."""

    @field_validator("value")
    @classmethod
    def _regex_compiles(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") == "RegularExpression":
            return check_regex(value)
        return value


class HeaderMatch(QueryParamMatch):
    name: HeaderName
    """Compared case-insensitively, as HTTP header names are."""


class HTTPRouteMatch(ApiModel):
    """Every condition given must hold; a match with no conditions matches every request."""

    path: PathMatch | None = None
    headers: list[HeaderMatch] = []
    query_params: list[QueryParamMatch] = []
    method: HttpMethod | None = None


# --- filters -------------------------------------------------------------------------------


class HeaderModifier(ApiModel):
    set: dict[HeaderName, HeaderValue] = {}
    """Headers to set, replacing any value already present."""
    add: dict[HeaderName, HeaderValue] = {}
    """Headers to append, keeping values already present."""
    remove: list[HeaderName] = []

    @model_validator(mode="after")
    def _no_header_both_set_and_removed(self) -> Self:
        removed = {name.lower() for name in self.remove}
        if clash := sorted(name for name in self.set if name.lower() in removed):
            raise ValueError(
                f"header(s) {', '.join(clash)} are both set and removed: keep one of the two"
            )
        return self


class PathRewrite(ApiModel):
    """Exactly one of the two."""

    replace_prefix_match: str | None = None
    """Replace the matched path prefix with this (the rule must match by PathPrefix)."""
    replace_full_path: str | None = None
    """Replace the whole path with this."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [p for p in (self.replace_prefix_match, self.replace_full_path) if p is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of replacePrefixMatch and replaceFullPath")
        if not given[0].startswith("/"):
            raise ValueError(f"{given[0]!r} is not an absolute path: it must start with '/'")
        return self


class URLRewrite(ApiModel):
    path: PathRewrite | None = None
    hostname: Hostname | None = None
    """The Host (:authority) sent to the backend."""


class HTTPRouteFilters(ApiModel):
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    url_rewrite: URLRewrite | None = None


# --- resilience and traffic tests ----------------------------------------------------------


class HTTPRetry(ApiModel):
    attempts: Annotated[int, Field(ge=0, le=MAX_RETRY_ATTEMPTS)]
    """Retries after the first try; 0 disables retries."""
    per_try_timeout: Duration | None = None
    retry_on: list[RetryOn] = ["connect-failure", "refused-stream", "gateway-error"]
    """Which failures are retried. The default retries only what is safe for any method."""
    retriable_status_codes: list[HttpStatus] = []

    @model_validator(mode="after")
    def _status_codes_iff_asked(self) -> Self:
        asked = "retriable-status-codes" in self.retry_on
        if asked and not self.retriable_status_codes:
            raise ValueError(
                "retryOn names retriable-status-codes: list them in retriableStatusCodes"
            )
        if self.retriable_status_codes and not asked:
            raise ValueError(
                "retriableStatusCodes are only used when retryOn includes "
                "retriable-status-codes: add it, or remove the codes"
            )
        return self


class FaultDelay(ApiModel):
    fixed_delay: Duration
    percentage: Percentage = 100


class FaultAbort(ApiModel):
    http_status: HttpStatus
    percentage: Percentage = 100


class HTTPFault(ApiModel):
    """Injected failures, to test how callers cope; at least one of delay and abort."""

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None

    @model_validator(mode="after")
    def _something_to_inject(self) -> Self:
        if self.delay is None and self.abort is None:
            raise ValueError("a fault needs a delay, an abort, or both")
        return self


class MirrorBackendRef(ApiModel):
    name: DnsLabel
    namespace: DnsLabel | None = None
    port: PortNumber | None = None
    subset: DnsLabel | None = None


class HTTPMirror(ApiModel):
    """A copy of the traffic, sent fire-and-forget; its responses are dropped."""

    backend_ref: MirrorBackendRef
    percentage: Percentage = 100


# --- the route -----------------------------------------------------------------------------


class HTTPRouteRule(ApiModel):
    name: DnsLabel | None = None
    matches: list[HTTPRouteMatch] = []
    """The rule applies when any match holds; no matches means every request."""
    filters: HTTPRouteFilters | None = None
    backend_refs: list[BackendRef] = []
    timeout: Duration | None = None
    """The whole request, retries included."""
    retries: HTTPRetry | None = None
    fault: HTTPFault | None = None
    mirror: HTTPMirror | None = None

    @field_validator("backend_refs")
    @classmethod
    def _weights_add_up(cls, backends: list[BackendRef]) -> list[BackendRef]:
        return check_weights(backends)

    @model_validator(mode="after")
    def _someone_answers(self) -> Self:
        if not self.backend_refs:
            abort = self.fault.abort if self.fault is not None else None
            if abort is None or abort.percentage < 100:
                raise ValueError(
                    "a rule needs at least one backendRef; only a rule whose fault aborts "
                    "100 % of requests may have none"
                )
        return self

    @model_validator(mode="after")
    def _prefix_rewrite_needs_prefix_match(self) -> Self:
        rewrite = self.filters.url_rewrite if self.filters is not None else None
        if rewrite is None or rewrite.path is None or rewrite.path.replace_prefix_match is None:
            return self
        for match in self.matches:
            if match.path is not None and match.path.type != "PathPrefix":
                raise ValueError(
                    "replacePrefixMatch needs a prefix to replace: every match of this rule "
                    f"must use path type PathPrefix, not {match.path.type}; "
                    "or use replaceFullPath"
                )
        return self


class HTTPRouteSpec(ApiModel):
    parent_refs: Annotated[list[ParentRef], Field(min_length=1)]
    hostnames: list[Hostname] = []
    """Host names this route answers for (Gateway parents); all when empty."""
    rules: Annotated[list[HTTPRouteRule], Field(min_length=1)]
    """Tried in order; the first rule with a matching match wins."""

    @field_validator("rules")
    @classmethod
    def _rule_names_unique(cls, rules: list[HTTPRouteRule]) -> list[HTTPRouteRule]:
        if names := repeated(rule.name for rule in rules if rule.name is not None):
            raise ValueError(f"rule names must be unique; repeated: {', '.join(names)}")
        return rules


class HTTPRoute(Resource):
    """HTTP routing for a Service or a Gateway: matches, filters, backends and resilience."""

    kind: Literal["HTTPRoute"] = "HTTPRoute"
    spec: HTTPRouteSpec


class TCPRouteRule(ApiModel):
    backend_refs: Annotated[list[BackendRef], Field(min_length=1)]

    @field_validator("backend_refs")
    @classmethod
    def _weights_add_up(cls, backends: list[BackendRef]) -> list[BackendRef]:
        return check_weights(backends)


class TCPRouteSpec(ApiModel):
    parent_refs: Annotated[list[ParentRef], Field(min_length=1)]
    rules: Annotated[list[TCPRouteRule], Field(min_length=1)]


class TCPRoute(Resource):
    """Weighted TCP forwarding for a Service or a Gateway listener."""

    kind: Literal["TCPRoute"] = "TCPRoute"
    spec: TCPRouteSpec
