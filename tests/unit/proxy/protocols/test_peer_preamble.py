"""The introduction a TCP relay sends first: read whole however the bytes are cut,
what follows it handed on untouched, and an oversized one refused."""

from __future__ import annotations

import pytest

from mycelium.proxy.protocols.peer_preamble import (
    MAX_INTRODUCTION_BYTES,
    PreambleError,
    PreambleReader,
    encode_preamble,
)

INTRODUCTION = b"workload=teller;namespace=default;app=teller;version=v1"


def test_the_introduction_and_the_clients_first_bytes_part_ways() -> None:
    reader = PreambleReader()
    assert reader.feed(encode_preamble(INTRODUCTION) + b"twelve bytes") == b"twelve bytes"
    assert reader.introduction == INTRODUCTION
    assert reader.feed(b"more") == b"more"  # after it, bytes pass as they come


def test_cut_at_every_byte() -> None:
    wire = encode_preamble(INTRODUCTION) + b"x"
    reader = PreambleReader()
    out = b"".join(reader.feed(wire[i : i + 1]) for i in range(len(wire)))
    assert (reader.introduction, out) == (INTRODUCTION, b"x")


def test_an_empty_introduction_is_one() -> None:
    reader = PreambleReader()
    assert reader.feed(b"\x00\x00rest") == b"rest"
    assert reader.introduction == b""


def test_an_oversized_announcement_is_refused_before_its_bytes_are_held() -> None:
    reader = PreambleReader()
    with pytest.raises(PreambleError, match="at most 1024"):
        reader.feed((MAX_INTRODUCTION_BYTES + 1).to_bytes(2, "big"))
    with pytest.raises(PreambleError):
        encode_preamble(b"x" * (MAX_INTRODUCTION_BYTES + 1))
