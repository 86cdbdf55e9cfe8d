"""Connections held for clients the controller has not authenticated: bounded in all
and per address, so one flooding address leaves room for everyone else."""

from __future__ import annotations

import pytest

from mycelium.control.connection_limits import ConnectionLimits


def test_one_address_cannot_take_every_place() -> None:
    limits = ConnectionLimits(total=10, per_address=3)
    assert [limits.try_open("198.18.0.9") for _ in range(4)] == [
        None,
        None,
        None,
        "too_many_from_address",
    ]
    assert limits.try_open("198.18.0.10") is None  # another address still gets in
    assert limits.open == 4


def test_the_total_holds_whatever_the_number_of_addresses() -> None:
    limits = ConnectionLimits(total=5, per_address=2)
    answers = [limits.try_open(f"198.18.1.{i}") for i in range(8)]
    assert answers.count(None) == 5
    assert answers[5:] == ["too_many_connections"] * 3
    limits.close("198.18.1.0")
    assert limits.try_open("198.18.1.7") is None  # a place given back is a place again


def test_closed_addresses_are_forgotten() -> None:
    limits = ConnectionLimits(total=4, per_address=2)
    for _ in range(2):
        limits.try_open("198.18.2.1")
    limits.close("198.18.2.1")
    limits.close("198.18.2.1")
    assert limits.held_by("198.18.2.1") == 0
    assert limits.open == 0
    with pytest.raises(ValueError, match=r"no connection from 198\.18\.2\.1"):
        limits.close("198.18.2.1")
