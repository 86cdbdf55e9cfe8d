"""The interface every L7 filter implements, as Envoy's decoder and encoder filters do.

A filter sees the request on its way upstream (`on_request`) and the response head on
its way back (`on_response`). `on_request` returns None to continue, or a number of
seconds to wait before continuing (a delay fault); to answer the request itself it
raises a `ProxyError` (an abort fault, a rate limit). Filters are built once per route
rule and config version (`chain.build_chain`), so per-request work is only the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mycelium.proxy.routing import RequestFacts

type Headers = list[tuple[bytes, bytes]]


class FilteredRequest(Protocol):
    """What a filter sees of a request of either protocol, and may change: its target,
    its fields (the authority travels as a `host` field while filters run) and its Host
    value. No connection, no protocol state: a filter cannot tell HTTP/1.1 from HTTP/2."""

    method: bytes
    target: bytes
    headers: Headers
    host: str
    facts: RequestFacts | None  # the matcher's view, once a rule was matched
    rule_name: str


class RequestFilter(Protocol):
    def on_request(self, request: FilteredRequest) -> float | None: ...


class ResponseFilter(Protocol):
    def on_response(self, request: FilteredRequest, headers: Headers) -> Headers: ...
