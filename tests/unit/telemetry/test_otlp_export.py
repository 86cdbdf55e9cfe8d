"""OTLP export without a socket: the JSON encoding decodes with the official
opentelemetry-proto messages, and the queue is bounded (drops are counted)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from tests.support.otlp_receiver import attributes_of, decode

from mycelium.telemetry import SPAN_KIND_CLIENT, SPAN_KIND_SERVER
from mycelium.telemetry.otlp import CollectorAddress, OtlpHttpExporter, encode_spans
from mycelium.telemetry.tracing import Span


def span(span_id: int, parent: int = 0, kind: int = SPAN_KIND_CLIENT) -> Span:
    out = Span(0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id, parent, b"k=v", kind)  # type: ignore[arg-type]
    out.name = "outbound reviews.default"
    out.start_ns, out.end_ns = 1_700_000_000_000_000_000, 1_700_000_000_002_000_000
    out.attributes = {"http.request.method": "GET", "http.response.status_code": 503}
    out.error = True
    return out


def test_the_json_encoding_decodes_with_the_official_messages() -> None:
    body = encode_spans(
        [span(0x1122334455667788), span(0x99, 0x1122334455667788, SPAN_KIND_SERVER)],
        {"service.name": "productpage.default"},
        "0.1.0",
    )
    request = decode(body, "application/json")
    [resource_spans] = request.resource_spans
    assert attributes_of(resource_spans.resource.attributes) == {
        "service.name": "productpage.default"
    }
    [scope] = resource_spans.scope_spans
    assert scope.scope.name == "mycelium.proxy"
    client, server = scope.spans
    assert client.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert client.span_id.hex() == "1122334455667788"
    assert client.parent_span_id == b""  # a root
    assert server.parent_span_id.hex() == "1122334455667788"
    assert (client.kind, server.kind) == (SPAN_KIND_CLIENT, SPAN_KIND_SERVER)
    assert client.trace_state == "k=v"
    assert client.end_time_unix_nano - client.start_time_unix_nano == 2_000_000
    assert attributes_of(client.attributes) == {
        "http.request.method": "GET",
        "http.response.status_code": 503,
    }
    assert client.status.code == 2  # STATUS_CODE_ERROR


def test_a_full_queue_drops_and_counts() -> None:
    counters: defaultdict[str, int] = defaultdict(int)
    exporter = OtlpHttpExporter(
        CollectorAddress.parse("http://127.0.0.1:4318"), {}, counters, max_queued=3
    )
    for number in range(1, 6):
        exporter.add(span(number))
    assert exporter.queued == 3
    assert counters["trace_spans_dropped"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://127.0.0.1:4318", CollectorAddress("127.0.0.1", 4318, "/v1/traces")),
        ("http://collector/", CollectorAddress("collector", 4318, "/v1/traces")),
        ("http://[::1]:9/otlp/v1/traces", CollectorAddress("::1", 9, "/otlp/v1/traces")),
    ],
)
def test_collector_addresses(text: str, expected: CollectorAddress) -> None:
    assert CollectorAddress.parse(text) == expected


@pytest.mark.parametrize("text", ["https://collector:4318", "collector:4318", "http://:4318"])
def test_collector_addresses_that_cannot_work_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="trace collector"):
        CollectorAddress.parse(text)
