"""Assembles the filters of one route rule, in one place and one order.

Request path: fault (delay or abort first: a drill must not depend on anything else),
then URL rewrite, then request header edits. Response path: response header edits.
Timeouts, retries and mirroring are the router's business (`proxy.router`: `forward`,
`mirror`), configured from the same rule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mycelium.discovery import config as cfg
from mycelium.proxy.filters.base import RequestFilter, ResponseFilter
from mycelium.proxy.filters.fault import FaultFilter
from mycelium.proxy.filters.header_edits import RequestHeaderFilter, ResponseHeaderFilter
from mycelium.proxy.filters.rewrite import RewriteFilter


@dataclass(slots=True)
class RuleChain:
    request: list[RequestFilter] = field(default_factory=list)
    response: list[ResponseFilter] = field(default_factory=list)


def build_chain(rule: cfg.HttpRule, rng: random.Random) -> RuleChain:
    chain = RuleChain()
    if rule.fault is not None:
        chain.request.append(FaultFilter(rule.fault, rng))
    if rule.rewrite is not None:
        prefixes = [m.path.value for m in rule.matches if m.path and m.path.type == "PathPrefix"]
        chain.request.append(RewriteFilter(rule.rewrite, prefixes[0] if prefixes else None))
    if rule.request_headers is not None:
        chain.request.append(RequestHeaderFilter(rule.request_headers))
    if rule.response_headers is not None:
        chain.response.append(ResponseHeaderFilter(rule.response_headers))
    return chain
