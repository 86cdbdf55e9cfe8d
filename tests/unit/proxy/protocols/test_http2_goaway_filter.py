"""Graceful GOAWAY frames are taken out of an upstream's bytes; everything else passes."""

from __future__ import annotations

from hyperframe.frame import DataFrame, GoAwayFrame, PingFrame

from mycelium.proxy.protocols.http2 import GracefulGoawayFilter


def frames() -> tuple[bytes, bytes, bytes, bytes]:
    data = DataFrame(1, data=b"x" * 100).serialize()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    graceful = GoAwayFrame(0, last_stream_id=7, error_code=0).serialize()
    failing = GoAwayFrame(0, last_stream_id=3, error_code=1).serialize()
    return data, ping, graceful, failing


def test_a_graceful_goaway_is_taken_out_wherever_the_bytes_are_cut() -> None:
    data, ping, graceful, failing = frames()
    stream = data + graceful + ping + failing
    for cut in range(len(stream) + 1):
        goaway_filter = GracefulGoawayFilter()
        first, found_first = goaway_filter.feed(stream[:cut])
        second, found_second = goaway_filter.feed(stream[cut:])
        assert first + second == data + ping + failing  # an error GOAWAY is h2's to see
        assert found_first + found_second == [7]


def test_frames_pass_untouched_when_there_is_no_goaway() -> None:
    data, ping, _, _ = frames()
    passed, found = GracefulGoawayFilter().feed(data + ping)
    assert (passed, found) == (data + ping, [])
