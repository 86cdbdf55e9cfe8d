"""Errors of the HTTP/1.1 core: who sent the bad bytes, what the proxy should answer.

Every error carries `status` (the response the proxy sends, or would send), a
machine-readable `reason` that goes into `x-mycelium-reason` and the access log, and a
human `detail` that says what was wrong and what to check. Three families:

- `DownstreamProtocolError`: a client sent something we refuse; answer `status`, close.
- `UpstreamProtocolError`: an upstream server did; the client gets a 502 whose reason is
  always `upstream_protocol_error`, and `cause` keeps the precise code for the logs.
- `LocalProtocolError`: our own code asked to write something HTTP/1.1 cannot carry
  (a header value with CR/LF, a method that is no token); that is a bug or a bad config.

Reason strings are part of the product's interface (dashboards and alerts key on them),
so they only ever gain members.
"""

from __future__ import annotations

from typing import Literal

from mycelium.errors import MeshError

type Http1Reason = Literal[
    "bad_request",
    "bad_header_name",
    "bad_header_value",
    "obsolete_line_folding",
    "bare_lf",
    "bad_host",
    "bad_content_length",
    "request_smuggling",
    "bad_chunk",
    "bad_status",
    "incomplete_message",
    "unsolicited_response",
    "header_too_large",
    "too_many_headers",
    "uri_too_long",
    "body_too_large",
    "unsupported_method",
    "unsupported_transfer_coding",
    "unsupported_version",
    "http2_preface",
]

# The answer to a client whose request is refused for each reason (RFC 9110 section 15).
DOWNSTREAM_STATUS: dict[Http1Reason, int] = {
    "bad_request": 400,
    "bad_header_name": 400,
    "bad_header_value": 400,
    "obsolete_line_folding": 400,  # RFC 9112 section 5.2: reject, or replace with SP
    "bare_lf": 400,
    "bad_host": 400,  # RFC 9112 section 3.2: no Host, or more than one
    "bad_content_length": 400,  # RFC 9112 section 6.3, rule 5
    "request_smuggling": 400,  # RFC 9112 section 6.3, rules 3 and 4
    "bad_chunk": 400,
    "bad_status": 400,
    "incomplete_message": 400,
    "unsolicited_response": 400,
    "header_too_large": 431,  # RFC 6585 section 5
    "too_many_headers": 431,
    "uri_too_long": 414,
    "body_too_large": 413,
    "unsupported_method": 501,  # RFC 9110 section 9.1: an unrecognized method
    "unsupported_transfer_coding": 501,  # RFC 9112 section 6.1: a coding we do not know
    "unsupported_version": 505,
    # An HTTP/2 client that did not negotiate: an HTTP/1 answer means nothing to it, so
    # the caller should route the bytes to HTTP/2 (`take_remaining`) rather than reply.
    "http2_preface": 505,
}


class Http1Error(MeshError):
    """HTTP/1.1 bytes or a message we refuse; `status` is what the proxy should answer."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


class DownstreamProtocolError(Http1Error):
    """A client sent bytes we refuse: answer `status` with `reason`, then close."""

    def __init__(self, reason: Http1Reason, detail: str) -> None:
        super().__init__(DOWNSTREAM_STATUS[reason], reason, detail)


class UpstreamProtocolError(Http1Error):
    """An upstream server sent bytes we refuse: the client gets a 502, `cause` says why."""

    def __init__(self, cause: Http1Reason, detail: str) -> None:
        super().__init__(502, "upstream_protocol_error", detail)
        self.cause: Http1Reason = cause
        self.args = (f"502 upstream_protocol_error ({cause}): {detail}",)


class LocalProtocolError(Http1Error):
    """We were asked to write something HTTP/1.1 cannot carry; a bug or a bad config."""

    def __init__(self, reason: Http1Reason, detail: str) -> None:
        super().__init__(500, reason, detail)
