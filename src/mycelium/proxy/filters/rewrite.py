"""URL rewriting (HTTPRoute's urlRewrite): replace the matched path prefix or the whole
path, and/or the Host header, before the request goes upstream."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mycelium.discovery import config as cfg

if TYPE_CHECKING:
    from mycelium.proxy.filters.base import FilteredRequest


class RewriteFilter:
    def __init__(self, rewrite: cfg.Rewrite, matched_prefix: str | None) -> None:
        self._full = rewrite.replace_full_path
        self._prefix = rewrite.replace_prefix_match
        self._matched = (matched_prefix or "").rstrip("/")
        self._host = rewrite.hostname.encode() if rewrite.hostname else None

    def on_request(self, request: FilteredRequest) -> float | None:
        path, sep, query = request.target.partition(b"?")
        if self._full is not None:
            path = self._full.encode()
        elif self._prefix is not None and path.decode().startswith(self._matched):
            rest = path[len(self._matched) :]
            new = self._prefix.rstrip("/") + rest.decode() if rest else self._prefix
            path = (new or "/").encode()
        request.target = path + sep + query
        if self._host is not None:
            request.headers = [(n, v) for n, v in request.headers if n != b"host"]
            request.headers.append((b"host", self._host))
            request.host = self._host.decode()
        return None
