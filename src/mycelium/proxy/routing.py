"""Route matching: which rule of a service's route a request takes, and which backend.

Sans-IO: `compile_route` turns a pushed `ServiceRoute` into matchers once per config
version (regexes compiled, weights accumulated); `CompiledRoute.match` then costs a few
comparisons per request. Precedence follows the Gateway API: across all rules, an exact
path beats a longer prefix beats a shorter one beats a regex; then a method match, then
more header matches, then more query matches; ties keep the order of the rules. A rule
with no matches matches everything.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from mycelium.discovery import config as cfg


class RequestFacts:
    """What matching looks at; built once per request by the protocol shell.

    `headers` has lower-case names, repeated headers joined with ","; built from the
    raw fields (`from_fields`) only when a matcher first asks, since most rules never
    look at headers."""

    __slots__ = ("_fields", "_headers", "_params", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,  # without the query string
        query: str,  # raw, without '?'
        headers: Mapping[str, str] | None,
        fields: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self._headers = headers
        self._fields = fields
        self._params: dict[str, str] | None = None

    @classmethod
    def from_target(cls, method: str, target: str, headers: Mapping[str, str]) -> RequestFacts:
        path, _, query = target.partition("?")
        return cls(method, path or "/", query, headers)

    @classmethod
    def from_fields(
        cls, method: str, target: str, fields: list[tuple[bytes, bytes]]
    ) -> RequestFacts:
        """Facts whose `headers` are folded from the raw `fields` on first use."""
        path, _, query = target.partition("?")
        return cls(method, path or "/", query, None, fields)

    @property
    def headers(self) -> Mapping[str, str]:
        headers = self._headers
        if headers is None:
            folded: dict[str, str] = {}
            for name, value in self._fields or ():
                key = name.decode("latin-1")
                text = value.decode("latin-1")
                folded[key] = f"{folded[key]},{text}" if key in folded else text
            headers = self._headers = folded
        return headers

    def query_param(self, name: str) -> str | None:
        if self._params is None:
            self._params = dict(parse_qsl(self.query, keep_blank_values=True))
        return self._params.get(name)


type Matcher = Callable[[RequestFacts], bool]

# When a rule sets no timeout, a response head must still arrive within this (Envoy's
# default route timeout is 15 s too).
DEFAULT_TIMEOUT_SECONDS = 15.0


@dataclass(slots=True)
class CompiledRule:
    rule: cfg.HttpRule
    cumulative: list[int] = field(default_factory=list)
    total: int = 0
    state: Any = None  # per-rule filter objects, attached by the filter chain builder
    # Whether a request on this rule may have to wait (a delay fault) or fans out (a
    # mirror): such requests take the exchange's asynchronous path from the start.
    waits: bool = False
    # Whether the rule leaves the request head as it came (no rewrite, no header edits),
    # so that it can be forwarded as received.
    keeps_head: bool = True
    only: cfg.WeightedCluster | None = None  # the one backend, when there is one
    # How long one attempt may wait for its response head when the rule says (its
    # timeout, or its per-try timeout if shorter); None: the default, which the core's
    # sweep enforces without a timer of its own.
    attempt_timeout: float | None = None

    def __post_init__(self) -> None:
        rule = self.rule
        fault = rule.fault
        self.waits = rule.mirror is not None or (
            fault is not None and fault.delay_seconds is not None
        )
        self.keeps_head = rule.rewrite is None and rule.request_headers is None
        per_try = rule.retries.per_try_timeout if rule.retries is not None else None
        if rule.timeout or per_try:
            self.attempt_timeout = min(per_try or math.inf, rule.timeout or DEFAULT_TIMEOUT_SECONDS)
        running = 0
        for backend in self.rule.backends:
            running += backend.weight
            self.cumulative.append(running)
        self.total = running
        # The common rule has one backend: no draw needed.
        backends = self.rule.backends
        self.only = backends[0] if len(backends) == 1 and running > 0 else None

    def pick_backend(self, rnd: float) -> cfg.WeightedCluster | None:
        """The backend for a uniform random number in [0, 1); None if all weights are 0."""
        if self.only is not None:
            return self.only
        if self.total <= 0:
            return None
        index = bisect.bisect_right(self.cumulative, rnd * self.total)
        return self.rule.backends[min(index, len(self.rule.backends) - 1)]


@dataclass(slots=True)
class CompiledRoute:
    route: cfg.ServiceRoute
    rules: list[CompiledRule]
    _ordered: list[tuple[Matcher | None, CompiledRule]]
    # The rule every request takes when the most specific candidate matches everything
    # (a route with one rule and no matches): no request facts are needed to find it.
    catch_all: CompiledRule | None = None

    def match(self, facts: RequestFacts) -> CompiledRule | None:
        for matcher, rule in self._ordered:
            if matcher is None or matcher(facts):
                return rule
        return None


def compile_route(route: cfg.ServiceRoute) -> CompiledRoute:
    rules = [CompiledRule(rule) for rule in route.http_rules]
    candidates: list[tuple[tuple[int, ...], int, Matcher | None, CompiledRule]] = []
    for index, compiled in enumerate(rules):
        if not compiled.rule.matches:
            candidates.append((_LOWEST, index, None, compiled))
            continue
        for match in compiled.rule.matches:
            candidates.append((_specificity(match), index, _matcher(match), compiled))
    candidates.sort(key=lambda c: (c[0], c[1]))
    ordered = [(m, r) for _, _, m, r in candidates]
    catch_all = ordered[0][1] if ordered and ordered[0][0] is None else None
    return CompiledRoute(route, rules, ordered, catch_all)


def compile_matches(matches: list[cfg.RouteMatch]) -> Matcher | None:
    """One matcher for "any of these matches"; None when the list is empty (match all)."""
    if not matches:
        return None
    matchers = [_matcher(m) for m in matches]
    if len(matchers) == 1:
        return matchers[0]
    return lambda f: any(m(f) for m in matchers)


# Sort keys: smaller sorts first.
_LOWEST = (9, 0, 0, 0, 0)


def _specificity(match: cfg.RouteMatch) -> tuple[int, ...]:
    path = match.path
    if path is None:
        kind, length = 3, 0
    elif path.type == "Exact":
        kind, length = 0, len(path.value)
    elif path.type == "PathPrefix":
        kind, length = 1, len(path.value)
    else:
        kind, length = 2, 0
    return (
        kind,
        -length,
        0 if match.method else 1,
        -len(match.headers),
        -len(match.query_params),
    )


def _matcher(match: cfg.RouteMatch) -> Matcher:
    checks: list[Matcher] = []
    if match.path is not None:
        checks.append(_path_check(match.path))
    if match.method is not None:
        method = match.method.upper()
        checks.append(lambda f: f.method == method)
    for header in match.headers:
        checks.append(_value_check(header, _header_getter(header.name.lower())))
    for param in match.query_params:
        checks.append(_value_check(param, _param_getter(param.name)))
    if len(checks) == 1:
        return checks[0]
    return lambda f: all(check(f) for check in checks)


def _header_getter(name: str) -> Callable[[RequestFacts], str | None]:
    return lambda f: f.headers.get(name)


def _param_getter(name: str) -> Callable[[RequestFacts], str | None]:
    return lambda f: f.query_param(name)


def _path_check(path: cfg.StringMatch) -> Matcher:
    value = path.value
    if path.type == "Exact":
        return lambda f: f.path == value
    if path.type == "PathPrefix":
        prefix = value.rstrip("/")
        if not prefix:
            return lambda f: True
        # Element-wise, as the Gateway API says: /foo matches /foo and /foo/bar, not /foobar.
        return lambda f: f.path == prefix or f.path.startswith(prefix + "/")
    pattern = re.compile(value)
    return lambda f: pattern.fullmatch(f.path) is not None


def _value_check(match: cfg.KeyValueMatch, get: Callable[[RequestFacts], str | None]) -> Matcher:
    if match.type == "Exact":
        expected = match.value
        return lambda f: get(f) == expected
    pattern = re.compile(match.value)

    def check(f: RequestFacts) -> bool:
        value = get(f)
        return value is not None and pattern.fullmatch(value) is not None

    return check
