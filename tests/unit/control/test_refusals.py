"""Refusals are all counted, but a flood of them logs one line a second per reason,
and the next line says how many it left out."""

from __future__ import annotations

import logging

import pytest

from mycelium.control.refusals import RefusalLog


def test_a_flood_is_counted_in_full_and_logged_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="test.refusals")
    refusals = RefusalLog(logging.getLogger("test.refusals"), "discovery connection")
    for i in range(100):
        refusals.refuse("frame_too_large", f"198.18.0.{i}", "a 16 MiB frame", now=10.0 + i / 1000)
    refusals.refuse("hello_timeout", "198.18.0.1", "no hello in 10 s", now=10.05)
    refusals.refuse("frame_too_large", "198.18.0.200", "a 16 MiB frame", now=11.2)

    assert refusals.counts == {"frame_too_large": 101, "hello_timeout": 1}
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "refused discovery connection from 198.18.0.0 (frame_too_large): a 16 MiB frame",
        "refused discovery connection from 198.18.0.1 (hello_timeout): no hello in 10 s",
        "refused discovery connection from 198.18.0.200 (frame_too_large): a 16 MiB frame"
        " [and 99 more like it since the last such line]",
    ]
