"""Distributed tracing: trace context in and out, one span per proxy hop, sampling.

Propagation is sans-IO: `parse_traceparent`, `format_traceparent` and `extract` take
and give header values and lists of (lowercase name, value) pairs, as the HTTP/1 parser
and the HTTP/2 exchange hold them. W3C Trace Context (`traceparent`, `tracestate`) is
what the proxy reads and writes; B3 (Zipkin's single `b3` header, or the `X-B3-*`
family) is accepted on input and continued as W3C.

The `Tracer` is a request observer (see `mycelium.telemetry`). A request of either
protocol asks it to `begin` once, where its upstream request head is about to be built
(the proxy's `ProxiedRequest.trace`): the tracer decides (parent-based sampling), and
for a sampled request gives the request a `Span` and rewrites the trace headers so that
the next hop's parent is this proxy's span. When the request
finishes, `request_finished` completes the span and queues it for export
(`telemetry/otlp.py`), off the hot path.

Invariants:
- An unsampled request costs a scan of its header names and nothing else: no header
  is rewritten, so what the client sent (an unsampled `traceparent`, `b3: 0`) goes on
  as is and the next hop reaches the same decision.
- A span is recorded once per request and hop, whatever the retries: every attempt
  carries the same `traceparent`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from mycelium.telemetry import FinishedRequest, TrafficSide

__all__ = [
    "DEFAULT_SAMPLING",
    "SamplingOnly",
    "Span",
    "SpanContext",
    "Tracer",
    "extract",
    "format_traceparent",
    "inject",
    "parse_b3",
    "parse_b3_multi",
    "parse_traceparent",
]

type Fields = list[tuple[bytes, bytes]]

TRACEPARENT: Final = b"traceparent"
TRACESTATE: Final = b"tracestate"
B3: Final = b"b3"
B3_TRACE_ID: Final = b"x-b3-traceid"
B3_SPAN_ID: Final = b"x-b3-spanid"
B3_PARENT_SPAN_ID: Final = b"x-b3-parentspanid"
B3_SAMPLED: Final = b"x-b3-sampled"
B3_FLAGS: Final = b"x-b3-flags"
# Every field that carries trace context: a sampled hop replaces them all with its own
# `traceparent` (and the `tracestate` it received), so that no stale B3 parent travels
# beside it.
CONTEXT_FIELDS: Final = frozenset(
    {TRACEPARENT, TRACESTATE, B3, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS}
)
_B3_MULTI: Final = frozenset({B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS})

# Istio's default: 1 % of the traces that start at a proxy (meshConfig tracing.sampling).
DEFAULT_SAMPLING = 0.01
# W3C Trace Context section 3.3.1.5: a proxy must pass on at least 512 characters of
# tracestate; beyond this we pass nothing rather than cut a list member in two.
MAX_TRACESTATE_BYTES = 8192

_HEX: Final = frozenset(b"0123456789abcdef")
_TRACE_ID_MAX: Final = (1 << 128) - 1
_SPAN_ID_MAX: Final = (1 << 64) - 1
# traceparent version 00 is exactly `00-` 32 hex `-` 16 hex `-` 2 hex (section 3.2.2).
_TRACEPARENT_LENGTH: Final = 55
_FLAG_SAMPLED: Final = 0x01

# OTLP's SpanKind numbers (opentelemetry/proto/trace/v1/trace.proto).
type SpanKind = Literal[2, 3]  # SERVER, CLIENT (the values are in `mycelium.telemetry`)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanContext:
    """A parent as a request carried it in.

    `sampled` is None when the caller deferred the decision (B3 without a sampling
    state); W3C always decides. `tracestate` is the vendors' list, passed on unread.
    """

    trace_id: int  # 128 bits, never 0
    span_id: int  # 64 bits, never 0
    sampled: bool | None
    tracestate: bytes = b""

    def __post_init__(self) -> None:
        if not 0 < self.trace_id <= _TRACE_ID_MAX:
            raise ValueError(f"trace id {self.trace_id:#x} is not a non-zero 128-bit number")
        if not 0 < self.span_id <= _SPAN_ID_MAX:
            raise ValueError(f"span id {self.span_id:#x} is not a non-zero 64-bit number")


@dataclass(frozen=True, slots=True)
class SamplingOnly:
    """A B3 header that carries a decision and no ids (`b3: 0`, `b3: 1`, `b3: d`)."""

    sampled: bool


def _hex_number(value: bytes, length: int) -> int | None:
    """`value` as a number if it is exactly `length` lowercase hex digits."""
    if len(value) != length or not all(byte in _HEX for byte in value):
        return None
    return int(value, 16)


def parse_traceparent(value: bytes, tracestate: bytes = b"") -> SpanContext | None:
    """A `traceparent` value (W3C Trace Context section 3.2), or None when invalid.

    Strict as the spec asks: lowercase hex only; version `ff` is invalid; version 00 is
    exactly 55 characters; a later version may be longer, but only after a `-`, and its
    first four fields are read as version 00's (section 3.2.4); all-zero ids are invalid.
    """
    value = value.strip(b" \t")
    if len(value) < _TRACEPARENT_LENGTH:
        return None
    version = _hex_number(value[:2], 2)
    if version is None or version == 0xFF:
        return None
    if version == 0 and len(value) != _TRACEPARENT_LENGTH:
        return None
    if (
        len(value) > _TRACEPARENT_LENGTH
        and value[_TRACEPARENT_LENGTH : _TRACEPARENT_LENGTH + 1] != b"-"
    ):
        return None
    if value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    trace_id = _hex_number(value[3:35], 32)
    span_id = _hex_number(value[36:52], 16)
    flags = _hex_number(value[53:55], 2)
    if not trace_id or not span_id or flags is None:
        return None
    if len(tracestate) > MAX_TRACESTATE_BYTES:
        tracestate = b""
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        sampled=bool(flags & _FLAG_SAMPLED),
        tracestate=tracestate,
    )


def format_traceparent(trace_id: int, span_id: int, *, sampled: bool) -> bytes:
    """A version 00 `traceparent` value."""
    return b"00-%032x-%016x-%s" % (trace_id, span_id, b"01" if sampled else b"00")


def _b3_id(value: bytes, *, trace: bool) -> int | None:
    """A B3 id: a trace id has 16 or 32 hex digits (a 64-bit one is the low half of the
    W3C id), a span id 16. B3 allows uppercase; W3C does not, so fold it here."""
    value = value.strip(b" \t").lower()
    lengths = (16, 32) if trace else (16,)
    if len(value) not in lengths:
        return None
    return _hex_number(value, len(value)) or None


def _b3_sampled(value: bytes | None) -> bool | None:
    if value is None:
        return None
    value = value.strip(b" \t").lower()
    if value in (b"1", b"true", b"d"):  # "d": debug, which implies sampled
        return True
    if value in (b"0", b"false"):
        return False
    return None


def parse_b3(value: bytes) -> SpanContext | SamplingOnly | None:
    """The single `b3` header: `{trace}-{span}[-{sampled}[-{parent}]]` or a lone
    sampling state; None when malformed (B3 single-header spec, openzipkin/b3-propagation)."""
    parts = value.strip(b" \t").split(b"-")
    if len(parts) == 1:
        sampled = _b3_sampled(parts[0]) if parts[0] else None
        return None if sampled is None else SamplingOnly(sampled)
    if len(parts) > 4:
        return None
    trace_id = _b3_id(parts[0], trace=True)
    span_id = _b3_id(parts[1], trace=False)
    if trace_id is None or span_id is None:
        return None
    sampled = None
    if len(parts) >= 3:
        sampled = _b3_sampled(parts[2])
        if sampled is None:
            return None  # a sampling state must be one of the known ones
    if len(parts) == 4 and _b3_id(parts[3], trace=False) is None:
        return None
    return SpanContext(trace_id=trace_id, span_id=span_id, sampled=sampled)


def parse_b3_multi(
    trace_id: bytes | None, span_id: bytes | None, sampled: bytes | None, flags: bytes | None
) -> SpanContext | SamplingOnly | None:
    """The `X-B3-*` family; `X-B3-Flags: 1` (debug) means sampled."""
    decision = True if flags is not None and flags.strip() == b"1" else _b3_sampled(sampled)
    if trace_id is None and span_id is None:
        return None if decision is None else SamplingOnly(decision)
    if trace_id is None or span_id is None:
        return None
    trace = _b3_id(trace_id, trace=True)
    span = _b3_id(span_id, trace=False)
    if trace is None or span is None:
        return None
    return SpanContext(trace_id=trace, span_id=span, sampled=decision)


def extract(headers: Sequence[tuple[bytes, bytes]]) -> SpanContext | SamplingOnly | None:
    """The parent a request carries: W3C first; B3 only when there is no valid
    `traceparent`. Costs one pass over the field names when there is none."""
    traceparent: list[bytes] | None = None
    tracestate: list[bytes] | None = None
    b3: bytes | None = None
    multi: dict[bytes, bytes] | None = None
    for name, value in headers:
        if name not in CONTEXT_FIELDS:
            continue
        if name == TRACEPARENT:
            traceparent = [*(traceparent or ()), value]
        elif name == TRACESTATE:
            tracestate = [*(tracestate or ()), value]
        elif name == B3:
            b3 = value
        else:
            multi = multi or {}
            multi[name] = value
    if traceparent is not None:
        # two traceparent fields cannot be combined: the request carries no valid parent
        # (W3C section 3.2), and then tracestate is ignored too (section 3.3).
        parent = (
            parse_traceparent(traceparent[0], b",".join(tracestate or ()))
            if len(traceparent) == 1
            else None
        )
        if parent is not None:
            return parent
    if b3 is not None:
        single = parse_b3(b3)
        if single is not None:
            return single
    if multi is not None and _B3_MULTI.intersection(multi):
        return parse_b3_multi(
            multi.get(B3_TRACE_ID),
            multi.get(B3_SPAN_ID),
            multi.get(B3_SAMPLED),
            multi.get(B3_FLAGS),
        )
    return None


def inject(headers: Sequence[tuple[bytes, bytes]], span: Span) -> Fields:
    """`headers` with the trace context fields replaced by the span's: its
    `traceparent` (so that the next hop's parent is this span) and the `tracestate` it
    received. B3 fields are dropped: the request now carries W3C context only."""
    out = [field for field in headers if field[0] not in CONTEXT_FIELDS]
    out.append((TRACEPARENT, format_traceparent(span.trace_id, span.span_id, sampled=True)))
    if span.tracestate:
        out.append((TRACESTATE, span.tracestate))
    return out


class Span:
    """One proxy hop of a sampled request. Filled in when the request finishes."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "kind",
        "name",
        "parent_span_id",
        "span_id",
        "start_ns",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self, trace_id: int, span_id: int, parent_span_id: int, tracestate: bytes, kind: SpanKind
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id  # 0: the trace starts here
        self.tracestate = tracestate
        self.kind = kind
        self.name = ""
        self.start_ns = 0
        self.end_ns = 0
        self.error = False
        self.attributes: dict[str, str | int] = {}


class TracedRequest(Protocol):
    """What `Tracer.begin` reads and changes in a live request of either protocol."""

    headers: Fields
    span: Span | Literal[False] | None  # None: not decided yet; False: not sampled

    @property
    def side(self) -> TrafficSide: ...

    @property
    def peer_principal(self) -> str | None: ...


class Tracer:
    """Parent-based sampling, span ids, and the end of every sampled request's span.

    Sampling: a sampled parent is always continued and an unsampled one never; a
    request without a decision starts a trace with probability `ratio`. A request that
    came in over mTLS from another proxy without any context is not sampled: that
    proxy has already decided (or does not trace), and a trace that began here would
    miss its first hop.
    """

    def __init__(
        self,
        ratio: float,
        export: Callable[[Span], None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"trace sampling ratio {ratio} must be between 0 and 1")
        self.ratio = ratio
        self._export = export
        self._rng = rng or random.Random()

    # --- at the upstream request head ---------------------------------------------------

    def begin(self, request: TracedRequest) -> None:
        """Decide whether the request is traced; if so give it a span and rewrite its
        trace headers for the next hop. Called once, where the upstream head is built."""
        if request.span is not None:
            return
        span = self._decide(request.side, request.headers, request.peer_principal)
        if span is None:
            request.span = False
            return
        request.span = span
        request.headers = inject(request.headers, span)

    def _decide(
        self, side: TrafficSide, headers: Fields, peer_principal: str | None
    ) -> Span | None:
        kind = side.span_kind
        parent = extract(headers)
        rng = self._rng
        if isinstance(parent, SpanContext):
            if parent.sampled is False:
                return None
            if parent.sampled is None and rng.random() >= self.ratio:
                return None
            return Span(
                parent.trace_id, rng.getrandbits(64) or 1, parent.span_id, parent.tracestate, kind
            )
        if parent is None:
            # the calling proxy decided, and did not sample
            if side.reporter == "destination" and peer_principal:
                return None
            if rng.random() >= self.ratio:
                return None
        elif not parent.sampled:
            return None
        return Span(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, 0, b"", kind)

    # --- the request observer ------------------------------------------------------------

    def request_finished(self, request: FinishedRequest) -> None:
        span = request.span
        if span is False:
            return
        if span is None:
            # The proxy answered before building an upstream head (no route, denied,
            # rate limited, an injected abort): the span records its answer.
            if not request.reason:
                return
            span = self._decide(request.side, request.headers, request.peer_principal)
            if span is None:
                return
        end = time.time_ns()
        span.end_ns = end
        span.start_ns = end - int((request.ended - request.started) * 1e9)
        path = request.target.partition(b"?")[0].decode("latin-1")
        # Low cardinality, as a span name must be: the hop and the service it serves
        # or calls ("outbound reviews.default"); the path is an attribute.
        span.name = f"{request.side.direction} {request.service or request.host or '-'}"
        attributes = span.attributes
        attributes["http.request.method"] = request.method.decode("latin-1")
        attributes["url.path"] = path
        attributes["http.response.status_code"] = request.status
        attributes["network.protocol.version"] = "2" if request.protocol == "HTTP/2" else "1.1"
        attributes["mycelium.direction"] = request.side.direction
        if request.host:
            attributes["server.address"] = request.host
        if request.service:
            attributes["mycelium.service"] = request.service
        if request.upstream_host:
            attributes["mycelium.upstream_host"] = request.upstream_host
        if request.cluster_name:
            attributes["mycelium.upstream_cluster"] = request.cluster_name
        if request.reason:
            attributes["mycelium.reason"] = request.reason
        principal = request.peer_principal
        if principal:
            attributes["mycelium.peer_principal"] = principal
        attributes["client.address"] = request.peer_host
        # OTel's HTTP conventions: a 5xx is an error on either side, and so is a
        # request that got no status at all (the client left, the connection failed).
        span.error = request.status >= 500 or request.status == 0
        self._export(span)
