"""gRPC messages counted however DATA frames cut the body."""

from __future__ import annotations

import random

from mycelium.proxy.protocols.grpc_messages import GrpcMessageCounter


def message(payload: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(payload).to_bytes(4, "big") + payload


def test_whole_messages_in_one_chunk() -> None:
    counter = GrpcMessageCounter()
    counter.feed(message(b"hello") + message(b"") + message(b"x" * 300, compressed=True))
    assert counter.count == 3


def test_a_body_cut_at_every_byte_counts_the_same() -> None:
    body = b"".join(message(bytes(n)) for n in (0, 1, 4, 5, 6, 1000))
    counter = GrpcMessageCounter()
    for i in range(len(body)):
        counter.feed(body[i : i + 1])
    assert counter.count == 6


def test_random_cuts_count_every_message() -> None:
    rng = random.Random(7)
    payloads = [bytes(rng.randrange(0, 70_000)) for _ in range(40)]
    body = b"".join(message(p) for p in payloads)
    counter = GrpcMessageCounter()
    position = 0
    while position < len(body):
        step = rng.randrange(1, 20_000)
        counter.feed(body[position : position + step])
        position += step
    assert counter.count == 40


def test_a_message_begun_counts_before_its_bytes_arrive() -> None:
    counter = GrpcMessageCounter()
    counter.feed(message(b"x" * 100)[:20])  # the prefix and part of the payload
    assert counter.count == 1
    counter.feed(b"\x00\x00")  # still the first message's payload
    assert counter.count == 1
