"""`SendBuffer` with a real pair of h2 state machines wired together, no event loop:
data leaves only as the peer's windows allow, `on_sent` reports exactly what left
(which is what the proxy then acknowledges to the other side), and the stream ends
with its trailers once everything is out."""

from __future__ import annotations

from h2.connection import H2Connection
from h2.events import DataReceived, StreamEnded, TrailersReceived

from mycelium.proxy.protocols.http2 import (
    DEFAULT_WINDOW_BYTES,
    SendBuffer,
    client_connection,
    server_connection,
    start,
)


def wire(a: H2Connection, b: H2Connection) -> list[object]:
    """Deliver what each side has to send until both are quiet; return b's events."""
    events: list[object] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_b and not to_a:
            return events
        if to_b:
            events += b.receive_data(to_b)
        if to_a:
            a.receive_data(to_a)


def test_data_waits_for_the_window_and_on_sent_counts_what_left() -> None:
    server, client = server_connection(), client_connection()
    start(server)
    start(client)
    wire(client, server)
    client.send_headers(
        1,
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")],
        end_stream=True,
    )
    wire(client, server)
    server.send_headers(1, [(b":status", b"200")])
    sent: list[int] = []
    buffer = SendBuffer()
    buffer.open(1, sent.append)
    body = b"x" * 1_000_000
    buffer.queue(1, body)
    buffer.end(1, [(b"grpc-status", b"0")])

    received = 0
    ended = False
    trailers: list[tuple[bytes, bytes]] = []
    rounds = 0
    while not ended:
        rounds += 1
        buffer.flush(server)
        # never more in flight than the client's stream window (the proxy's own setting)
        assert sum(sent) - received <= client.local_settings.initial_window_size
        assert buffer.buffered == len(body) - sum(sent)
        for event in wire(server, client):
            if isinstance(event, DataReceived):
                received += len(event.data)
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, TrailersReceived):
                trailers = list(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, StreamEnded):
                ended = True
        wire(client, server)  # the WINDOW_UPDATEs
    assert received == len(body) == sum(sent)
    assert trailers == [(b"grpc-status", b"0")]
    assert buffer.buffered == 0
    assert rounds > len(body) // client.local_settings.initial_window_size


def test_nothing_leaves_while_the_peer_keeps_its_window_shut() -> None:
    server, client = server_connection(), H2Connection()
    start(server)
    client.initiate_connection()
    wire(client, server)
    client.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
        end_stream=True,
    )
    wire(client, server)
    server.send_headers(1, [(b":status", b"200")])
    sent: list[int] = []
    buffer = SendBuffer()
    buffer.open(1, sent.append)
    buffer.queue(1, b"y" * 200_000)
    for _ in range(3):  # the client reads but never acknowledges
        buffer.flush(server)
        wire(server, client)
    assert sum(sent) == DEFAULT_WINDOW_BYTES
    assert buffer.buffered == 200_000 - DEFAULT_WINDOW_BYTES


def test_a_discarded_stream_gives_its_bytes_back() -> None:
    released: list[int] = []
    buffer = SendBuffer()
    buffer.open(3, released.append)
    buffer.queue(3, b"z" * 10)
    buffer.queue(5, b"ignored: stream 5 was never opened")
    assert buffer.buffered == 10
    buffer.discard(3)
    assert buffer.buffered == 0
    assert buffer.pending(3) == 0
    # reported like sent bytes, so the side they came from gets its window back
    assert released == [10]
    assert buffer.idle
