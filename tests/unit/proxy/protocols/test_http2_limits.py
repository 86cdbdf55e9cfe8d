"""The limits a proxy's HTTP/2 connection announces and enforces, and the flood
counters, with time passed in (no clock, no socket)."""

from __future__ import annotations

import pytest
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError

from mycelium.proxy.protocols.http2 import (
    MAX_CONCURRENT_STREAMS,
    MAX_CONTROL_FRAMES_PER_SECOND,
    MAX_HEADER_LIST_SIZE,
    MAX_RESETS_PER_SECOND,
    MAX_UNREAD_ACKS,
    STREAM_WINDOW_BYTES,
    FloodGuard,
    server_connection,
    start,
)


def test_the_server_announces_its_limits() -> None:
    server = server_connection()
    start(server)
    client = H2Connection()
    client.initiate_connection()
    client.receive_data(server.data_to_send())
    assert client.remote_settings.max_concurrent_streams == MAX_CONCURRENT_STREAMS
    assert client.remote_settings.max_header_list_size == MAX_HEADER_LIST_SIZE
    assert client.remote_settings.initial_window_size == STREAM_WINDOW_BYTES


def test_an_oversized_header_block_is_a_connection_error_from_the_first_request() -> None:
    server = server_connection()
    start(server)
    client = H2Connection()
    client.initiate_connection()
    client.send_headers(
        1,
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/"),
            ("x-big", "b" * MAX_HEADER_LIST_SIZE),
        ],
        end_stream=True,
    )
    server.data_to_send()
    with pytest.raises(ProtocolError):
        server.receive_data(client.data_to_send())
    assert server.data_to_send()  # the GOAWAY h2 queued


def test_resets_over_the_limit_within_a_second_are_a_flood() -> None:
    guard = FloodGuard()
    verdicts = [guard.reset_received(100.0 + n / 1000) for n in range(MAX_RESETS_PER_SECOND)]
    assert verdicts == [None] * MAX_RESETS_PER_SECOND
    assert guard.reset_received(100.5) == ErrorCodes.ENHANCE_YOUR_CALM
    assert guard.refused == "rapid_reset"


def test_a_steady_trickle_of_resets_is_not_a_flood() -> None:
    guard = FloodGuard()
    # half the limit every second, for a minute
    verdicts = {
        guard.reset_received(second + n / MAX_RESETS_PER_SECOND)
        for second in range(60)
        for n in range(MAX_RESETS_PER_SECOND // 2)
    }
    assert verdicts == {None}


def test_control_frames_over_the_rate_are_a_flood() -> None:
    guard = FloodGuard()
    for n in range(MAX_CONTROL_FRAMES_PER_SECOND):
        assert guard.control_frame_received(7.0 + n / 10_000, peer_reading=True) is None
    assert guard.control_frame_received(7.5, peer_reading=True) == ErrorCodes.ENHANCE_YOUR_CALM
    assert guard.refused == "control_frame_flood"


def test_acks_piling_up_for_a_peer_that_does_not_read_are_a_flood() -> None:
    guard = FloodGuard()
    # slowly enough for the rate limit, but the peer never reads our acks
    for n in range(MAX_UNREAD_ACKS):
        assert guard.control_frame_received(float(n), peer_reading=False) is None
    assert guard.control_frame_received(1000.0, peer_reading=False) == ErrorCodes.ENHANCE_YOUR_CALM


def test_a_peer_that_reads_again_starts_afresh() -> None:
    guard = FloodGuard()
    for n in range(MAX_UNREAD_ACKS):
        guard.control_frame_received(float(n), peer_reading=False)
    assert guard.control_frame_received(500.0, peer_reading=True) is None
    assert guard.control_frame_received(501.0, peer_reading=False) is None
