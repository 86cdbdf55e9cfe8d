"""mTLS on the serving side: a connection's TLS is ended here, its plaintext handed on.

`TlsTerminating` takes over a connection whose first bytes (already read by protocol
detection) start a TLS handshake. It runs a sans-IO `TlsSession` over the real
transport and, once the peer is verified, gives the inner protocol (HTTP/1.1 or HTTP/2
detection again, now on plaintext) a `PlaintextTransport` that encrypts what it writes.
The peer's SPIFFE ID is the inner transport's `peer_identity` extra info, which
authorization and the access log read.

Flow control passes through: the inner protocol pausing its reading pauses the real
socket's, and the real transport's pause_writing/resume_writing reach the inner
protocol. A refused handshake (no certificate, another CA, expired) is counted as
`mtls_refused_<reason>` and the connection closed; nothing reaches the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any, cast

from mycelium.identity.tls_session import TlsRefused, TlsSession

log = logging.getLogger("mycelium.proxy.mtls")


class PlaintextTransport(asyncio.Transport):
    """What the inner protocol sees: a transport that encrypts on the way out."""

    def __init__(self, outer: TlsTerminating) -> None:
        super().__init__()
        self._outer = outer
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        self._outer.session.send(bytes(data))
        self._outer.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
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

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._outer.inner = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._outer.inner is not None
        return self._outer.inner

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peer_identity":
            return self._outer.session.peer
        return self._outer.transport.get_extra_info(name, default)

    def can_write_eof(self) -> bool:
        return False


class TlsTerminating(asyncio.Protocol):
    def __init__(
        self,
        session: TlsSession,
        inner_factory: Callable[[], asyncio.Protocol],
        counters: MutableMapping[str, int],
    ) -> None:
        self.session = session
        self._inner_factory = inner_factory
        self._counters = counters
        self.inner: asyncio.Protocol | None = None
        self._plaintext: PlaintextTransport | None = None
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            plaintext = self.session.receive(data)
        except TlsRefused as exc:
            self._counters[f"mtls_refused_{exc.reason}"] += 1
            peer = self.transport.get_extra_info("peername")
            log.info("refused a TLS connection from %s: %s", peer[0] if peer else "?", exc)
            self.flush()  # the alert, so the peer learns why
            self.transport.close()
            return
        self.flush()
        if self.session.handshake_done and self.inner is None:
            self._counters["mtls_connections"] += 1
            self._plaintext = PlaintextTransport(self)
            self.inner = self._inner_factory()
            self.inner.connection_made(self._plaintext)
        if plaintext and self.inner is not None:
            self.inner.data_received(plaintext)
        if self.session.closed_by_peer and self.inner is not None:
            self.inner.eof_received()

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
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
