"""Durations, addresses and names: the scalar types every kind shares."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.api.scalars import check_cidr, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1.5s", 1.5), ("5s", 5.0), ("1m", 60.0), ("1h", 3600.0), ("0.5ms", 0.0005)],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1d", "1 s", "-1s", "0s", "1.s", ".5s", "1e3s", "s"])
def test_garbage_durations_are_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("'250ms', '1.5s'")):
        parse_duration(text)


def test_a_number_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="needs a unit"):
        parse_duration(5)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (1.5, "1.5s"), (5.0, "5s"), (60.0, "1m"), (90.0, "90s"), (7200.0, "2h")],
)
def test_durations_are_written_the_way_people_write_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_formatting_a_duration_reads_back_exactly(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_ip_blocks_accept_addresses_and_networks() -> None:
    assert check_cidr("10.1.2.3") == "10.1.2.3"
    assert check_cidr("fd00::/8") == "fd00::/8"
    with pytest.raises(ValueError, match=re.escape("did you mean '192.168.1.0/24'")):
        check_cidr("192.168.1.7/24")
