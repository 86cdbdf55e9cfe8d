"""Hands a listener's connection to HTTP/1 or HTTP/2 from its first bytes.

A client that speaks HTTP/2 with prior knowledge opens with the 24-byte preface
(RFC 9113 section 3.4); anything else goes to the HTTP/1 protocol, which refuses what
it cannot parse. Bytes are held only while they are still a prefix of the preface, so
an HTTP/1 request is handed over at its first byte. The chosen protocol takes the
transport (`set_protocol`) and gets the held bytes replayed.

uvloop starts reading right after `connection_made`, so nothing here relies on
pausing the transport; whatever arrives before the decision is buffered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from mycelium.identity.tls import spiffe_peer
from mycelium.net.tls_layer import TlsLayer
from mycelium.net.tls_session import TlsSession
from mycelium.proxy.http1.downstream import DownstreamHttp1
from mycelium.proxy.http2.downstream import DownstreamHttp2
from mycelium.proxy.protocols.detect import DETECTION_TIMEOUT, HTTP2_PREFACE, detect_protocol

if TYPE_CHECKING:
    from mycelium.proxy.core import ProxyCore
    from mycelium.proxy.router.roles import Role


class InboundTls:
    """What a serving listener does with TLS: the port's PeerAuthentication mode, read
    per connection from the config in force, and the proxy's SVID to terminate with."""

    def __init__(self, proxy: ProxyCore, role: Role) -> None:
        self._proxy = proxy
        self._role = role

    def mode(self) -> str:
        role = self._role
        inbound = role.inbound_port or self._proxy.active.inbound_ports.get(role.port or 0)
        return inbound.mtls if inbound is not None else "PERMISSIVE"

    def refused_plaintext(self) -> None:
        self._proxy.counters["mtls_refused_plaintext"] += 1

    def terminator(self, inner: Callable[[], asyncio.Protocol]) -> TlsLayer | None:
        if self._proxy.svid is None:
            return None
        session = TlsSession(self._proxy.server_tls(), server_side=True, verify_peer=spiffe_peer())
        return TlsLayer(session, inner, self._proxy.counters)


class DetectingProtocol(asyncio.Protocol):
    def __init__(
        self,
        http1: Callable[[], asyncio.Protocol],
        http2: Callable[[], asyncio.Protocol],
        inbound: InboundTls | None = None,
    ) -> None:
        self._http1 = http1
        self._http2 = http2
        self._inbound = inbound  # a serving listener: TLS and PeerAuthentication apply
        self._transport: asyncio.Transport | None = None
        self._held = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        # A client that says nothing is HTTP/1's to time out (its idle and head timeouts).
        self._timer = asyncio.get_running_loop().call_later(
            DETECTION_TIMEOUT, self._hand_over, self._http1
        )

    def data_received(self, data: bytes) -> None:
        held = self._held + data
        self._held = held
        inbound = self._inbound
        if inbound is not None and held:
            self._inbound = None  # decided once, on the first byte
            if self._peer_authentication(inbound, held):
                return
        if len(held) < len(HTTP2_PREFACE) and HTTP2_PREFACE.startswith(held):
            return  # could still be the preface
        self._hand_over(self._http2 if detect_protocol(held) == "http2" else self._http1)

    def _peer_authentication(self, inbound: InboundTls, held: bytes) -> bool:
        """TLS or plaintext, as the port's mode allows; True when the connection was
        handed to TLS termination or refused."""
        mode = inbound.mode()
        if held[0] == 0x16 and mode != "DISABLE":  # a TLS handshake record
            http1, http2 = self._http1, self._http2
            terminator = inbound.terminator(lambda: DetectingProtocol(http1, http2))
            if terminator is not None:
                self._hand_over(lambda: terminator)
                return True
        if mode == "STRICT":
            transport = self._transport
            self._transport = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            inbound.refused_plaintext()
            if transport is not None:
                transport.close()
            return True
        return False

    def eof_received(self) -> bool | None:
        protocol = self._hand_over(self._http1)
        return protocol.eof_received() if protocol is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def _hand_over(self, make: Callable[[], asyncio.Protocol]) -> asyncio.Protocol | None:
        transport = self._transport
        if transport is None:
            return None
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        protocol = make()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        held, self._held = self._held, b""
        if held and not transport.is_closing():
            protocol.data_received(held)
        return protocol


def listener_protocol(proxy: ProxyCore, role: Role) -> asyncio.Protocol:
    """The protocol factory's product for one accepted connection of a proxy listener
    (TLS is detected and ended where the role says clients may open with mTLS)."""
    return DetectingProtocol(
        lambda: DownstreamHttp1(proxy, role),
        lambda: DownstreamHttp2(proxy, role),
        InboundTls(proxy, role) if role.mesh_tls else None,
    )
