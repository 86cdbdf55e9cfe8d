"""The discovery wire format: frames in, messages out, no sockets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.discovery import protocol as p
from mycelium.discovery.errors import ProtocolViolation


def test_a_hello_and_its_resume_survive_encoding_split_at_every_byte() -> None:
    hello = p.Hello(node=p.NodeInfo(id="pod-1", namespace="shop"))
    resume = p.Resume(version="v1", held={"route/reviews.shop": "ab12"}, subscriptions=["reviews"])
    wire = p.encode(hello) + p.encode(resume)
    for cut in range(len(wire) + 1):
        decoder = p.FrameDecoder()
        frames = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert [p.parse_client_message(f) for f in frames] == [hello, resume]


@given(st.lists(st.integers(min_value=0, max_value=2**31), min_size=1, max_size=20), st.data())
def test_many_frames_come_out_in_order_however_the_bytes_are_chunked(
    nonces: list[int], data: st.DataObject
) -> None:
    messages = [p.Ack(nonce=n, version=f"v{n}") for n in nonces]
    wire = b"".join(p.encode(m) for m in messages)
    decoder = p.FrameDecoder()
    out: list[bytes] = []
    pos = 0
    while pos < len(wire):
        step = data.draw(st.integers(min_value=1, max_value=len(wire) - pos))
        out += decoder.feed(wire[pos : pos + step])
        pos += step
    assert [p.parse_client_message(f) for f in out] == messages


def test_an_oversized_frame_is_refused_before_it_is_buffered() -> None:
    decoder = p.FrameDecoder(max_frame=1024)
    with pytest.raises(ProtocolViolation, match="2048 bytes"):
        decoder.feed((2048).to_bytes(4, "big") + b"x")


def test_a_message_of_unknown_type_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolation, match="malformed message from proxy"):
        p.parse_client_message(b'{"type": "teleport"}')


@pytest.mark.parametrize("message", [p.Join(), p.Leave(), p.Heartbeat(), p.TelemetryReport()])
def test_every_client_message_reads_back_on_the_controller(message: p.ClientMessage) -> None:
    assert p.parse_client_message(p.encode(message)[4:]) == message


def test_the_server_cannot_send_client_messages() -> None:
    with pytest.raises(ProtocolViolation):
        p.parse_server_message(p.encode(p.Ack(nonce=1, version="x"))[4:])


def test_a_push_built_from_pre_encoded_entries_reads_as_the_same_push() -> None:
    entries = [p.Entry(name="route/a.b", version="v1", body={"x": [1, "two"], "y": None})]
    frame = p.encode_push(
        7,
        "snap-1",
        False,
        [p.encode_entry("route/a.b", "v1", {"x": [1, "two"], "y": None})],
        ["gone"],
    )
    expected = p.Push(nonce=7, version="snap-1", full=False, resources=entries, removed=["gone"])
    decoded = p.parse_server_message(p.FrameDecoder().feed(frame)[0])
    assert decoded == expected
