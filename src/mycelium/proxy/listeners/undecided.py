"""A connection whose first bytes are still being judged, and what takes it over.

Some listeners decide what a connection is from its first record (the mesh's mTLS or
not, which server name): until then the bytes are held, a timer bounds the wait, and
the decision takes the transport (`_take`) for the relay, a TLS layer or a refusal.
"""

from __future__ import annotations

import asyncio

from mycelium.net.tls_layer import TlsLayer


class Undecided(asyncio.Protocol):
    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._held = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._transport = None

    def _take(self) -> asyncio.Transport | None:
        """The transport, for the decision to hand over (None if already gone)."""
        transport, self._transport = self._transport, None
        self._stop_timer()
        return transport

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _terminate_tls(self, transport: asyncio.Transport, layer: TlsLayer) -> None:
        """Hand the connection to `layer`, which decrypts from the held ClientHello on."""
        transport.set_protocol(layer)
        layer.connection_made(transport)
        layer.data_received(self._held)
