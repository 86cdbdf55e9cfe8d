"""A request head is due a few seconds after the connection opens, or after the first
byte of a later request; never while a response streams, nor while a kept-alive
connection waits idle between requests."""

from __future__ import annotations

import pytest

from mycelium.control.api_limits import HeadDeadline


def test_a_connection_that_sends_nothing_is_overdue_at_the_deadline() -> None:
    deadline = HeadDeadline(10.0, opened_at=100.0)
    assert deadline.due == 110.0
    assert not deadline.overdue(109.9)
    assert deadline.overdue(110.0)


def test_a_trickled_head_does_not_move_the_deadline() -> None:
    deadline = HeadDeadline(10.0, opened_at=100.0)
    for second in range(1, 12):  # a slowloris client: a byte a second
        assert not deadline.data_received(100.0 + second)
    assert deadline.due == 110.0
    assert deadline.overdue(111.0)


def test_a_streaming_response_has_no_deadline() -> None:
    deadline = HeadDeadline(10.0, opened_at=100.0)
    deadline.head_received()
    assert deadline.phase == "serving"
    assert deadline.due is None
    assert not deadline.overdue(100.0 + 3600)  # a watch, an hour later
    assert not deadline.data_received(4000.0)  # the client may write meanwhile


def test_on_a_kept_alive_connection_the_clock_starts_with_the_next_request() -> None:
    deadline = HeadDeadline(10.0, opened_at=100.0)
    deadline.head_received()
    deadline.response_ended(keep_alive=True)
    assert deadline.phase == "idle"
    assert not deadline.overdue(160.0)  # idle is the keep-alive timeout's business
    assert deadline.data_received(160.0)  # the next request's first bytes
    assert deadline.due == 170.0
    assert not deadline.data_received(165.0)  # more of the same head
    assert deadline.overdue(170.0)


def test_after_a_response_that_closes_the_connection_nothing_is_awaited() -> None:
    deadline = HeadDeadline(10.0, opened_at=100.0)
    deadline.head_received()
    deadline.response_ended(keep_alive=False)
    assert deadline.phase == "closing"
    # The refused request's body still arriving is dropped, not taken for a head.
    assert not deadline.data_received(101.0)
    assert not deadline.overdue(1000.0)


def test_a_pipelined_head_already_parsed_stops_the_clock_at_once() -> None:
    deadline = HeadDeadline(10.0, opened_at=100.0)
    deadline.head_received()
    deadline.response_ended(keep_alive=True)
    deadline.head_received()  # it arrived with the first request
    assert deadline.phase == "serving"
    assert deadline.due is None


def test_a_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HeadDeadline(0.0, opened_at=0.0)
