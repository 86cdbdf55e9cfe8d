"""The relay's decisions with recording transports: no sockets. What one side reads
goes to the other; a full buffer stops reading the side that fills it; a FIN travels
as a shutdown of the other side's write half; a reset travels as a reset when the relay
passes resets, and as a close after the buffer otherwise. (Formerly the port forward's
own relay's tests: the port forward now runs on this relay.)"""

from __future__ import annotations

import asyncio
from typing import Any

from mycelium.net.relay import TcpRelay


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True
        self.eof_written = False
        self.ended: str | None = None  # "closed" or "aborted"
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

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

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    @property
    def side(self) -> asyncio.Protocol:
        assert self.protocol is not None
        return self.protocol


def paired(*, pass_resets: bool = False) -> tuple[TcpRelay, RecordingTransport, RecordingTransport]:
    client, upstream = RecordingTransport(), RecordingTransport()
    relay = TcpRelay(client, pass_resets=pass_resets)
    assert not client.reading  # nothing is read before the upstream is there
    relay.attach_upstream(upstream)
    return relay, client, upstream


async def test_bytes_flow_both_ways_once_paired() -> None:
    relay, client, upstream = paired()

    client.side.data_received(b"GET /")
    upstream.side.data_received(b"200 OK")

    assert (upstream.written, client.written) == (b"GET /", b"200 OK")
    assert client.reading
    assert (relay.bytes_to_upstream, relay.bytes_to_downstream) == (5, 6)


async def test_what_the_client_sent_before_pairing_goes_first() -> None:
    client, upstream = RecordingTransport(), RecordingTransport()
    relay = TcpRelay(client, initial_data=b"peeked ")
    client.side.data_received(b"held")  # uvloop may deliver while paused
    assert not client.reading
    relay.attach_upstream(upstream)
    assert upstream.written == b"peeked held"
    assert client.reading


async def test_a_full_buffer_stops_reading_the_side_that_fills_it_until_it_drains() -> None:
    _, client, upstream = paired()

    upstream.side.pause_writing()  # the upstream's send buffer is full
    assert not client.reading
    assert upstream.reading
    upstream.side.resume_writing()
    assert client.reading

    client.side.pause_writing()
    assert not upstream.reading
    client.side.resume_writing()
    assert upstream.reading


async def test_a_half_close_travels_and_the_other_direction_keeps_flowing() -> None:
    _, client, upstream = paired()

    keep_open = client.side.eof_received()

    assert keep_open
    assert upstream.eof_written
    upstream.side.data_received(b"the answer")
    assert client.written == b"the answer"
    assert (client.ended, upstream.ended) == (None, None)


async def test_both_directions_ended_close_both_sides() -> None:
    relay, client, upstream = paired()

    client.side.eof_received()
    upstream.side.eof_received()

    assert (client.ended, upstream.ended) == ("closed", "closed")
    client.side.connection_lost(None)
    upstream.side.connection_lost(None)
    result = await asyncio.wait_for(relay.wait(), 1)
    assert result.ended_by == "completed"


async def test_a_reset_on_one_side_resets_the_other_when_resets_pass() -> None:
    relay, client, upstream = paired(pass_resets=True)

    upstream.side.connection_lost(ConnectionResetError())

    assert client.ended == "aborted"
    client.side.connection_lost(None)
    result = await asyncio.wait_for(relay.wait(), 1)
    assert result.ended_by == "upstream_lost"


async def test_a_reset_on_one_side_closes_the_other_after_its_buffer_by_default() -> None:
    _, client, upstream = paired()

    upstream.side.connection_lost(ConnectionResetError())

    assert client.ended == "closed"  # what was already relayed still arrives


async def test_a_clean_close_on_one_side_closes_the_other_after_its_buffer() -> None:
    _, client, upstream = paired(pass_resets=True)

    client.side.connection_lost(None)

    assert upstream.ended == "closed"


async def test_a_client_gone_before_the_upstream_resets_the_upstream_it_gets() -> None:
    client, upstream = RecordingTransport(), RecordingTransport()
    relay = TcpRelay(client)
    client.close()
    client.side.connection_lost(None)

    relay.attach_upstream(upstream)

    assert upstream.ended == "aborted"
    upstream.side.connection_lost(None)
    result = await asyncio.wait_for(relay.wait(), 1)
    assert result.ended_by == "downstream_lost"
