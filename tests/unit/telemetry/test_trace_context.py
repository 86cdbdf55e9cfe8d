"""Trace context in and out (W3C Trace Context; B3 on input), and the tracer's
parent-based sampling, with header lists as the proxy holds them: no sockets."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.telemetry import (
    GATEWAY,
    INBOUND,
    OUTBOUND,
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    TrafficSide,
)
from mycelium.telemetry.tracing import (
    SamplingOnly,
    Span,
    SpanContext,
    Tracer,
    extract,
    format_traceparent,
    inject,
    parse_b3,
    parse_traceparent,
)

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7
VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# --- traceparent ----------------------------------------------------------------------------


def test_the_spec_example_parses() -> None:
    parent = parse_traceparent(VALID, b"congo=t61rcWkgMzE")
    assert parent == SpanContext(
        trace_id=TRACE, span_id=SPAN, sampled=True, tracestate=b"congo=t61rcWkgMzE"
    )


def test_the_sampled_flag_is_the_low_bit() -> None:
    assert parse_traceparent(VALID[:-2] + b"00").sampled is False  # type: ignore[union-attr]
    # other bits are reserved: ignored on input
    assert parse_traceparent(VALID[:-2] + b"09").sampled is True  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        VALID[:-1],  # too short
        VALID + b"0",  # version 00 is exactly 55 characters
        VALID.upper(),  # lowercase hex only
        b"ff" + VALID[2:],  # version ff is invalid
        b"0g" + VALID[2:],
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  # fields misplaced
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # later version: - only
    ],
)
def test_invalid_traceparents_are_rejected(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_as_version_00() -> None:
    parent = parse_traceparent(b"cc" + VALID[2:] + b"-what-the-future-holds")
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.sampled) == (TRACE, SPAN, True)


def test_format_round_trips() -> None:
    assert format_traceparent(TRACE, SPAN, sampled=True) == VALID
    assert format_traceparent(1, 2, sampled=False) == (
        b"00-00000000000000000000000000000001-0000000000000002-00"
    )


@given(st.integers(1, (1 << 128) - 1), st.integers(1, (1 << 64) - 1), st.booleans())
def test_any_context_round_trips(trace_id: int, span_id: int, sampled: bool) -> None:
    parsed = parse_traceparent(format_traceparent(trace_id, span_id, sampled=sampled))
    assert parsed == SpanContext(trace_id=trace_id, span_id=span_id, sampled=sampled)


@given(st.binary(max_size=80))
def test_the_parser_takes_any_bytes(value: bytes) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        assert parsed.trace_id
        assert parsed.span_id


def test_span_context_refuses_zero_ids() -> None:
    with pytest.raises(ValueError, match="trace id"):
        SpanContext(trace_id=0, span_id=1, sampled=True)
    with pytest.raises(ValueError, match="span id"):
        SpanContext(trace_id=1, span_id=1 << 64, sampled=True)


# --- B3 -------------------------------------------------------------------------------------


def test_b3_single_header() -> None:
    parent = parse_b3(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
    assert parent == SpanContext(
        trace_id=0x80F198EE56343BA864FE8B2A57D3EFF7, span_id=0xE457B5A2E4D86BD1, sampled=True
    )


def test_b3_64_bit_trace_ids_and_deferred_decisions() -> None:
    parent = parse_b3(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1")
    assert parent == SpanContext(
        trace_id=0x64FE8B2A57D3EFF7, span_id=0xE457B5A2E4D86BD1, sampled=None
    )
    assert parse_b3(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-d").sampled is True  # type: ignore[union-attr]
    assert parse_b3(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-0").sampled is False  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"0", SamplingOnly(False)), (b"1", SamplingOnly(True)), (b"d", SamplingOnly(True))],
)
def test_b3_decision_only(value: bytes, expected: SamplingOnly) -> None:
    assert parse_b3(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"x",
        b"64fe8b2a57d3eff7",  # an id alone
        b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",  # no such sampling state
        b"0000000000000000-e457b5a2e4d86bd1-1",  # zero trace id
        b"64fe8b2a57d3eff7-e457b5a2e4d86-1",  # short span id
        b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-zz",
        b"a-b-c-d-e",
    ],
)
def test_malformed_b3_is_ignored(value: bytes) -> None:
    assert parse_b3(value) is None


def test_b3_multi_headers() -> None:
    headers = [
        (b"host", b"reviews"),
        (b"x-b3-traceid", b"80F198EE56343BA864FE8B2A57D3EFF7"),  # B3 allows uppercase
        (b"x-b3-spanid", b"e457b5a2e4d86bd1"),
        (b"x-b3-parentspanid", b"05e3ac9a4f6e3b90"),
        (b"x-b3-sampled", b"1"),
    ]
    assert extract(headers) == SpanContext(
        trace_id=0x80F198EE56343BA864FE8B2A57D3EFF7, span_id=0xE457B5A2E4D86BD1, sampled=True
    )
    assert extract([(b"x-b3-sampled", b"0")]) == SamplingOnly(False)
    assert extract([(b"x-b3-flags", b"1"), *headers[1:3]]).sampled is True  # type: ignore[union-attr]
    assert extract([(b"x-b3-traceid", b"80f198ee56343ba8")]) is None  # no span id


# --- extract and inject ---------------------------------------------------------------------


def test_extract_prefers_w3c_and_joins_tracestate_fields() -> None:
    headers = [
        (b"b3", b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        (b"traceparent", VALID),
        (b"tracestate", b"a=1"),
        (b"tracestate", b"b=2"),
    ]
    assert extract(headers) == SpanContext(
        trace_id=TRACE, span_id=SPAN, sampled=True, tracestate=b"a=1,b=2"
    )


def test_extract_falls_back_to_b3_when_traceparent_is_invalid() -> None:
    headers = [(b"traceparent", b"garbage"), (b"b3", b"1")]
    assert extract(headers) == SamplingOnly(True)


def test_two_traceparents_are_no_parent() -> None:
    assert extract([(b"traceparent", VALID), (b"traceparent", VALID)]) is None


def test_no_context_is_none() -> None:
    assert extract([(b"host", b"reviews"), (b"accept", b"*/*")]) is None


def test_inject_replaces_every_context_field() -> None:
    span = Span(TRACE, 0x1122334455667788, SPAN, b"congo=t61rcWkgMzE", SPAN_KIND_CLIENT)
    headers = [
        (b"host", b"reviews"),
        (b"traceparent", VALID),
        (b"tracestate", b"congo=t61rcWkgMzE"),
        (b"b3", b"1"),
        (b"x-b3-sampled", b"1"),
    ]
    out = inject(headers, span)
    assert out == [
        (b"host", b"reviews"),
        (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-1122334455667788-01"),
        (b"tracestate", b"congo=t61rcWkgMzE"),
    ]
    assert headers[1] == (b"traceparent", VALID)  # the input is not modified


# --- sampling -------------------------------------------------------------------------------


@dataclass
class LiveRequest:
    """What `Tracer.begin` reads of a request on its way upstream (`TracedRequest`)."""

    headers: list[tuple[bytes, bytes]]
    side: TrafficSide = OUTBOUND
    peer_principal: str | None = None
    span: Span | Literal[False] | None = None


def traced(ratio: float, headers: list[tuple[bytes, bytes]], **kwargs: Any) -> LiveRequest:
    request = LiveRequest(headers, **kwargs)
    Tracer(ratio, lambda span: None, rng=random.Random(7)).begin(request)
    return request


def test_a_sampled_parent_is_continued_even_at_ratio_zero() -> None:
    exchange = traced(0.0, [(b"traceparent", VALID), (b"tracestate", b"k=v")])
    span = exchange.span
    assert isinstance(span, Span)
    assert (span.trace_id, span.parent_span_id, span.kind) == (TRACE, SPAN, SPAN_KIND_CLIENT)
    assert span.span_id not in (0, SPAN)
    assert exchange.headers == [
        (b"traceparent", format_traceparent(TRACE, span.span_id, sampled=True)),
        (b"tracestate", b"k=v"),
    ]


def test_an_unsampled_parent_is_not_sampled_and_its_headers_go_on_untouched() -> None:
    headers = [(b"traceparent", VALID[:-2] + b"00")]
    exchange = traced(1.0, headers)
    assert exchange.span is False
    assert exchange.headers is headers


def test_a_root_is_sampled_by_ratio() -> None:
    assert traced(0.0, []).span is False
    root = traced(1.0, [], side=GATEWAY).span
    assert isinstance(root, Span)
    assert root.parent_span_id == 0
    assert root.kind == SPAN_KIND_SERVER
    tracer = Tracer(0.25, lambda span: None, rng=random.Random(1))
    sampled = 0
    for _ in range(4000):
        exchange = LiveRequest([])
        tracer.begin(exchange)
        sampled += isinstance(exchange.span, Span)
    assert 800 < sampled < 1200


def test_b3_is_continued_as_w3c() -> None:
    exchange = traced(0.0, [(b"b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")])
    span = exchange.span
    assert isinstance(span, Span)
    assert span.trace_id == 0x80F198EE56343BA864FE8B2A57D3EFF7
    assert span.parent_span_id == 0xE457B5A2E4D86BD1
    assert [name for name, _ in exchange.headers] == [b"traceparent"]
    # a deferred B3 decision is ours to take
    assert traced(0.0, [(b"b3", b"80f198ee56343ba8-e457b5a2e4d86bd1")]).span is False
    assert traced(1.0, [(b"b3", b"0")]).span is False
    assert isinstance(traced(0.0, [(b"b3", b"d")]).span, Span)


def test_inbound_from_a_mesh_peer_without_context_starts_no_trace() -> None:
    peer = "spiffe://cluster.local/ns/default/sa/productpage"
    assert traced(1.0, [], side=INBOUND, peer_principal=peer).span is False
    # from outside the mesh, the inbound hop is the edge
    assert isinstance(traced(1.0, [], side=INBOUND).span, Span)


def test_the_decision_is_taken_once() -> None:
    exchange = traced(1.0, [])
    first = exchange.span
    Tracer(1.0, lambda span: None).begin(exchange)
    assert exchange.span is first


def test_ratio_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Tracer(1.5, lambda span: None)
