"""Request and response header rewriting (HTTPRoute's requestHeaders/responseHeaders):
set replaces every value, add appends one, remove drops every value."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg

if TYPE_CHECKING:
    from mycelium.proxy.filters.base import FilteredRequest

type Headers = list[tuple[bytes, bytes]]


class HeaderEdits:
    """The edits of one rule, prepared as lower-case byte strings once."""

    def __init__(self, edits: cfg.HeaderEdits) -> None:
        self._set = [(k.lower().encode(), v.encode()) for k, v in edits.set.items()]
        self._add = [(k.lower().encode(), v.encode()) for k, v in edits.add.items()]
        drop = {k.lower().encode() for k in edits.remove}
        self._drop = drop | {name for name, _ in self._set}

    def apply(self, headers: Headers) -> Headers:
        if self._drop:
            headers = [(n, v) for n, v in headers if n not in self._drop]
        return headers + self._set + self._add


class RequestHeaderFilter:
    def __init__(self, edits: cfg.HeaderEdits) -> None:
        self._edits = HeaderEdits(edits)

    def on_request(self, request: FilteredRequest) -> float | None:
        request.headers = self._edits.apply(request.headers)
        return None


class ResponseHeaderFilter:
    def __init__(self, edits: cfg.HeaderEdits) -> None:
        self._edits = HeaderEdits(edits)

    def on_response(self, request: FilteredRequest, headers: Headers) -> Headers:
        return self._edits.apply(headers)
