"""What both HTTP/2 shells share: the transport, h2's state machine and the per-stream
send buffer, and the one place bytes are written.

`flush` moves queued DATA into h2 only while the transport accepts writes: a peer that
does not read its socket stops us taking more from the other side, exactly like one
that does not open its flow-control window. Control frames (acks, WINDOW_UPDATE,
RST_STREAM, GOAWAY) are always written.
"""

from __future__ import annotations

import asyncio
from typing import cast

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from mycelium.proxy.protocols.http2 import SendBuffer


class H2Channel(asyncio.Protocol):
    def __init__(self, conn: H2Connection) -> None:
        self.conn = conn
        self.sends = SendBuffer()
        self.transport: asyncio.Transport | None = None
        self.write_paused = False
        self.closed = False
        self._flush_soon: asyncio.Handle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.flush()

    @property
    def buffered_bytes(self) -> int:
        """Body bytes held for this peer: queued for its windows, or in the transport."""
        transport = self.transport
        pending = transport.get_write_buffer_size() if transport is not None else 0
        return self.sends.buffered + pending

    def flush_soon(self) -> None:
        """Flush once the current callbacks are done: the many streams a read of the
        other side touches then leave in one write instead of one write each."""
        if self._flush_soon is None and not self.closed:
            self._flush_soon = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self.closed:
            return
        if not self.write_paused:
            self.sends.flush(self.conn)
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Reopen the peer's windows by `size` bytes of stream `stream_id` (and of the
        connection): the bytes went on to the other side."""
        if self.closed or size <= 0:
            return
        # h2 still reopens the connection window when the stream has closed meanwhile.
        self.conn.acknowledge_received_data(size, stream_id)
        # Soon, not now: this runs inside the other connection's flush, whose callbacks
        # may lead back here; a deferred flush keeps the two from nesting.
        self.flush_soon()

    def reset_stream(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        self.sends.discard(stream_id)
        if self.closed:
            return
        try:
            self.conn.reset_stream(stream_id, code)
        except H2Error:  # already closed on the wire: nothing to reset
            return
        self.flush()

    def go_away(self, code: ErrorCodes) -> None:
        """Send GOAWAY and close once it is written."""
        if self.closed:
            return
        self.flush()  # what the windows allow still leaves before the GOAWAY
        self.conn.close_connection(code)
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
