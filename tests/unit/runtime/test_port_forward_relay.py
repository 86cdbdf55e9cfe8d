"""The relay's decisions with recording transports: no sockets, no loop. What one side
reads goes to the other; a full buffer stops reading the side that fills it; a FIN
travels as a shutdown of the other side's write half; a reset travels as a reset."""

from __future__ import annotations

import asyncio

from mycelium.runtime.port_forward import Relay


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True
        self.eof_written = False
        self.ended: str | None = None  # "closed" or "aborted"

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.ended is not None

    def close(self) -> None:
        self.ended = self.ended or "closed"

    def abort(self) -> None:
        self.ended = "aborted"


def paired() -> tuple[Relay, RecordingTransport, RecordingTransport, list[Relay]]:
    done: list[Relay] = []
    relay = Relay(done.append)
    client, upstream = RecordingTransport(), RecordingTransport()
    relay.client.connection_made(client)
    assert not client.reading  # nothing is read before the upstream is there
    relay.upstream.connection_made(upstream)
    relay.paired()
    return relay, client, upstream, done


def test_bytes_flow_both_ways_once_paired() -> None:
    relay, client, upstream, _ = paired()

    relay.client.data_received(b"GET /")
    relay.upstream.data_received(b"200 OK")

    assert (upstream.written, client.written) == (b"GET /", b"200 OK")
    assert client.reading


def test_a_server_that_speaks_first_reaches_the_client_before_pairing() -> None:
    relay = Relay(lambda _: None)
    client, upstream = RecordingTransport(), RecordingTransport()
    relay.client.connection_made(client)
    relay.upstream.connection_made(upstream)

    relay.upstream.data_received(b"220 smtp ready")

    assert client.written == b"220 smtp ready"


def test_a_full_buffer_stops_reading_the_side_that_fills_it_until_it_drains() -> None:
    relay, client, upstream, _ = paired()

    relay.upstream.pause_writing()  # the upstream's send buffer is full
    assert not client.reading
    assert upstream.reading
    relay.upstream.resume_writing()
    assert client.reading

    relay.client.pause_writing()
    assert not upstream.reading
    relay.client.resume_writing()
    assert upstream.reading


def test_a_half_close_travels_and_the_other_direction_keeps_flowing() -> None:
    relay, client, upstream, _ = paired()

    keep_open = relay.client.eof_received()

    assert keep_open
    assert upstream.eof_written
    relay.upstream.data_received(b"the answer")
    assert client.written == b"the answer"
    assert (client.ended, upstream.ended) == (None, None)


def test_both_directions_ended_close_both_sides() -> None:
    relay, client, upstream, done = paired()

    relay.client.eof_received()
    relay.upstream.eof_received()

    assert (client.ended, upstream.ended) == ("closed", "closed")
    relay.client.connection_lost(None)
    relay.upstream.connection_lost(None)
    assert done == [relay]


def test_a_reset_on_one_side_aborts_the_other() -> None:
    relay, client, _, done = paired()

    relay.upstream.connection_lost(ConnectionResetError())

    assert client.ended == "aborted"
    relay.client.connection_lost(None)
    assert done == [relay]


def test_a_clean_close_on_one_side_closes_the_other_after_its_buffer() -> None:
    relay, _, upstream, _ = paired()

    relay.client.connection_lost(None)

    assert upstream.ended == "closed"


def test_a_client_gone_while_dialling_closes_the_upstream_it_gets() -> None:
    done: list[Relay] = []
    relay = Relay(done.append)
    client, upstream = RecordingTransport(), RecordingTransport()
    relay.client.connection_made(client)
    client.close()
    relay.client.connection_lost(None)
    assert done == [relay]  # nothing else to wait for

    relay.upstream.connection_made(upstream)
    relay.paired()
    relay.upstream.connection_lost(None)

    assert upstream.ended == "closed"
    assert done == [relay]
