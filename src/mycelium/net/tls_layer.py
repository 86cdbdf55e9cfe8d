"""TLS under a connection already held: TLS below, plaintext to the protocol above.

`TlsLayer` is the real transport's protocol. It runs a sans-IO `TlsSession` and, once
the session has accepted its peer, gives the inner protocol a `PlaintextTransport` that
encrypts what it writes. Both ends use it:
- serving: detection has already read the ClientHello, so asyncio's `start_tls` cannot
  take over; the layer replays those bytes into the session. The inner protocol is
  HTTP detection again, or the TCP relay to the app;
- originating, for the TCP relay: the layer sends the ClientHello on connect, and
  `established` resolves when the handshake is done (or raises `TlsRefused`), so the
  relay's connect timeout covers the handshake too.

Whom the peer must be is the session's `verify_peer` (the mesh's SPIFFE check lives in
`identity.tls`); what it answered is the plaintext transport's `peer_identity` extra
info, which authorization and the access log read.

Unlike asyncio's TLS transport this one half-closes: `write_eof` sends close_notify
and keeps reading (TLS 1.3 allows each side to end its own direction), and the peer's
close_notify reaches the inner protocol as `eof_received`. A relayed database session
whose client shuts its sending side still gets its answer.

Flow control passes through: the inner protocol pausing its reading pauses the real
socket's, and the real transport's pause_writing/resume_writing reach the inner
protocol. A refused handshake (no certificate, another CA, expired, another identity
than expected) is counted as `<prefix>_refused_<reason>` and the connection closed;
nothing reaches the inner protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, MutableMapping
from typing import Any, cast

from mycelium.net.errors import TlsRefused
from mycelium.net.tls_session import TlsSession

log = logging.getLogger(__name__)


class PlaintextTransport(asyncio.Transport):
    """What the inner protocol sees: a transport that encrypts on the way out."""

    def __init__(self, outer: TlsLayer) -> None:
        super().__init__()
        self._outer = outer
        self._closing = False
        self._eof_written = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof_written:
            return
        self._outer.session.send(bytes(data))
        self._outer.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Our direction ends (close_notify); the peer's may go on."""
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self._outer.session.close()
        self._outer.flush()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._eof_written:
            self._eof_written = True
            self._outer.session.close()
            self._outer.flush()
        self._outer.transport.close()

    def abort(self) -> None:
        self._closing = True
        self._outer.transport.abort()

    def is_closing(self) -> bool:
        return self._closing or self._outer.transport.is_closing()

    def pause_reading(self) -> None:
        self._outer.transport.pause_reading()

    def resume_reading(self) -> None:
        self._outer.transport.resume_reading()

    def is_reading(self) -> bool:
        return self._outer.transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._outer.transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._outer.transport.set_write_buffer_limits(high=high, low=low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._outer.transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._outer.inner = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._outer.inner is not None
        return self._outer.inner

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peer_identity":
            return self._outer.session.peer
        if name == "alpn":
            return self._outer.session.alpn
        return self._outer.transport.get_extra_info(name, default)


class TlsLayer(asyncio.Protocol):
    def __init__(
        self,
        session: TlsSession,
        inner_factory: Callable[[], asyncio.Protocol],
        counters: MutableMapping[str, int] | None = None,
        *,
        counter_prefix: str = "mtls",
    ) -> None:
        self.session = session
        self._inner_factory = inner_factory
        self._counters: MutableMapping[str, int] = (
            counters if counters is not None else defaultdict(int)
        )
        self._prefix = counter_prefix
        self.inner: asyncio.Protocol | None = None
        self._plaintext: PlaintextTransport | None = None
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.established: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flush()  # an originating session's ClientHello

    def data_received(self, data: bytes) -> None:
        try:
            plaintext = self.session.receive(data)
        except TlsRefused as exc:
            self._refuse(exc)
            return
        self.flush()
        if self.session.handshake_done and self.inner is None:
            self._counters[f"{self._prefix}_connections"] += 1
            self._plaintext = PlaintextTransport(self)
            self.inner = self._inner_factory()
            if not self.established.done():
                self.established.set_result(None)
            self.inner.connection_made(self._plaintext)
        if plaintext and self.inner is not None:
            self.inner.data_received(plaintext)
        if self.session.closed_by_peer and self.inner is not None:
            self.inner.eof_received()

    def _refuse(self, exc: TlsRefused) -> None:
        self._counters[f"{self._prefix}_refused_{exc.reason}"] += 1
        peer = self.transport.get_extra_info("peername")
        log.info("refused a TLS connection with %s: %s", peer[0] if peer else "?", exc)
        self.flush()  # the alert, so the peer learns why
        self.transport.close()
        self._fail_established(exc)

    def _fail_established(self, exc: TlsRefused) -> None:
        if not self.established.done():
            self.established.set_exception(exc)
            # Marked as seen: a serving layer has no one waiting on it.
            self.established.exception()

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_established(
            TlsRefused("handshake_failed", f"the connection ended during the handshake: {exc}")
        )
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def flush(self) -> None:
        data = self.session.outgoing()
        if data and not self.transport.is_closing():
            self.transport.write(data)
