"""What a proxy may send is bounded, and the bounds agree with each other: a message
with every field at its bound still fits its size limit (or a legitimate proxy could
be refused), and one past a bound is refused by decoding, before the controller keeps
anything of it. The hello's bound is what an unauthenticated peer can make the
controller buffer, so its largest legitimate form is measured here."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.discovery import protocol as p
from mycelium.discovery.errors import ProtocolViolation


def largest_node() -> p.NodeInfo:
    return p.NodeInfo(
        id="i" * p.NAME_CHARS,
        namespace="n" * p.LABEL_VALUE_CHARS,
        workload="w" * p.NAME_CHARS,
        service_account="s" * p.NAME_CHARS,
        role="gateway",
        labels={f"{i:03d}".ljust(p.LABEL_KEY_CHARS, "k"): "v" * 63 for i in range(p.MAX_LABELS)},
        address="ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ports=[65535] * p.MAX_PORTS,
    )


def test_the_largest_legitimate_hello_fits_what_is_read_before_authentication() -> None:
    hello = p.Hello(node=largest_node(), token="t" * p.TOKEN_CHARS)
    size = len(p.encode(hello)) - 4
    assert 16 * 1024 < size <= p.MAX_HELLO_BYTES
    assert p.parse_client_message(p.encode(hello)[4:]) == hello
    # ...while a sidecar of bookinfo says hello in a few hundred bytes
    ordinary = p.Hello(
        node=p.NodeInfo(
            id="reviews-v2-7b4348-0",
            namespace="bookinfo",
            workload="reviews-v2-7b4348-0",
            service_account="bookinfo-reviews",
            labels={"app": "reviews", "version": "v2"},
            address="198.18.0.12",
            ports=[9080],
        ),
        token="x" * 300,
    )
    assert len(p.encode(ordinary)) < 700


def test_the_largest_legitimate_resume_fits_its_limit() -> None:
    resume = p.Resume(
        version="v" * p.VERSION_CHARS,
        held={
            f"{i:05d}".ljust(p.ENTRY_NAME_CHARS, "e"): "f" * 32 for i in range(p.MAX_HELD_ENTRIES)
        },
        subscriptions=[
            f"{i:04d}".ljust(p.REFERENCE_CHARS, "r") for i in range(p.MAX_SUBSCRIPTIONS)
        ],
    )
    payload = p.encode(resume)[4:]
    assert len(payload) <= p.MAX_MESSAGE_BYTES["resume"]
    assert p.parse_client_message(payload) == resume


def test_the_largest_legitimate_telemetry_report_fits_its_limit() -> None:
    row = p.TrafficRow(
        source_workload="s" * p.NAME_CHARS,
        source_workload_namespace="n" * p.NAME_CHARS,
        destination_service="d" * p.NAME_CHARS,
        destination_workload="w" * p.NAME_CHARS,
        destination_workload_namespace="m" * p.NAME_CHARS,
        route="r" * p.ENTRY_NAME_CHARS,
        protocol="grpc",
        mtls=True,
        requests=2**62,
        errors=2**62,
        latency_buckets=[2**62] * (len(p.LATENCY_BUCKETS_MS) + 1),
    )
    report = p.TelemetryReport(rows=[row] * p.MAX_TRAFFIC_ROWS)
    assert len(p.encode(report)) - 4 <= p.MAX_MESSAGE_BYTES["telemetry"]


def test_a_tap_batch_of_long_requests_fits_its_limit() -> None:
    event = p.TapEvent(
        ts=1.0,
        direction="outbound",
        protocol="HTTP/1.1",
        method="OPTIONS",
        path="/" * p.TAP_FIELD_CHARS,
        authority="a" * p.TAP_FIELD_CHARS,
        service="s" * p.NAME_CHARS,
        status=503,
        latency_ms=1.5,
        source="ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        source_principal="spiffe://cluster.local/ns/" + "n" * 63 + "/sa/" + "s" * 253,
        destination="d" * 260,
        reason="upstream_connect_error",
        response_flags="UF,URX",
    )
    batch = p.TapEvents(id="t" * 32, events=[event] * p.MAX_TAP_BATCH)
    assert len(p.encode(batch)) - 4 <= p.MAX_MESSAGE_BYTES["tap_events"]


@pytest.mark.parametrize(
    ("message", "bound"),
    [
        (p.Hello(node=p.NodeInfo(id="x" * (p.NAME_CHARS + 1))), "id"),
        (
            p.Hello(
                node=p.NodeInfo(id="x", labels={f"l{i}": "v" for i in range(p.MAX_LABELS + 1)})
            ),
            "labels",
        ),
        (p.Hello(node=p.NodeInfo(id="x", ports=[70000])), "ports"),
        (p.Subscribe(add=[f"svc-{i}" for i in range(p.MAX_SUBSCRIPTIONS + 1)]), "add"),
        (p.Subscribe(add=["h" * (p.REFERENCE_CHARS + 1)]), "add"),
        (p.Nack(nonce=1, version="v", reason="r" * (p.REASON_CHARS + 1)), "reason"),
        (p.TelemetryReport(rows=[]), None),
    ],
)
def test_a_message_past_a_bound_is_refused_by_decoding(
    message: p.ClientMessage, bound: str | None
) -> None:
    payload = msgspec.json.encode(message)
    if bound is None:  # the control: within its bounds, it decodes
        assert p.parse_client_message(payload) == message
        return
    with pytest.raises(ProtocolViolation, match=bound):
        p.parse_client_message(payload)


def test_a_message_heavier_than_its_type_may_be_is_refused_with_its_type() -> None:
    # Within every field's bound, but a heartbeat has no business weighing 2 KiB.
    payload = b'{"type":"heartbeat"' + b" " * 2048 + b"}"
    with pytest.raises(p.MessageTooLarge) as refused:
        p.parse_client_message(payload)
    assert refused.value.tag == "heartbeat"
    assert "exceeds its limit of 1024" in str(refused.value)


def test_a_forged_traffic_row_with_negative_counts_is_refused() -> None:
    row = [*(["w"] * 6), "http", True, -5, 0, [0] * (len(p.LATENCY_BUCKETS_MS) + 1)]
    payload = msgspec.json.encode({"type": "telemetry", "rows": [row]})
    with pytest.raises(ProtocolViolation, match="rows"):
        p.parse_client_message(payload)


def test_an_oversized_frame_is_skipped_unbuffered_and_the_next_one_decodes() -> None:
    decoder = p.FrameDecoder(1024, skip_oversized=True)
    wire = (10_000).to_bytes(4, "big") + b"x" * 10_000 + p.encode(p.Heartbeat())
    out: list[bytes | p.SkippedFrame] = []
    for at in range(0, len(wire), 700):  # arrives in pieces, as from a socket
        decoder.receive(wire[at : at + 700])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
        assert len(decoder._buffer) <= 1024 + 700  # never the skipped frame whole
    assert out == [p.SkippedFrame(10_000), b'{"type":"heartbeat"}']


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_message_are_a_message_or_a_protocol_violation(payload: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        p.parse_client_message(payload)
