"""A gateway's TCP and TLS ports: what becomes of each accepted connection.

(HTTP ports need nothing of their own: their connections go to the HTTP handlers with
a `gateway` listener, which route each request by its Host.)

- TCP: relayed at once, without waiting for a byte, to an endpoint of the listener's
  backends (drawn by weight), through mTLS when the endpoint runs a proxy.
- TLS (protocols HTTPS and TLS): the ClientHello is held until its first record is
  whole, and its server name (SNI) picks the listener, most specific name first (no
  name: only a listener without a hostname takes it). Then:
  - Passthrough: the held bytes and the rest are relayed, still encrypted;
  - Terminate: TLS ends here with the listener's certificate; HTTPS hands the plaintext
    to the HTTP handlers (HTTP/1.1, the one ALPN protocol offered), TLS relays it.
  A name no listener serves, bytes that are no TLS, or a client silent for
  `HELLO_TIMEOUT` are refused (`refused_gateway_unknown_sni`, `refused_gateway_not_tls`,
  `refused_gateway_silent`) and the connection closed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from mycelium.net.tls_layer import TlsLayer
from mycelium.net.tls_session import TlsSession
from mycelium.proxy.listeners.detecting import listener_protocol
from mycelium.proxy.listeners.tcp_routing import Refuse, RelayTo, peer_text, relay_to_backends
from mycelium.proxy.listeners.undecided import Undecided
from mycelium.proxy.protocols.tls_hello import read_client_hello
from mycelium.proxy.router.roles import GatewayListener

if TYPE_CHECKING:
    from mycelium.proxy.gateway import PortFamily, ServedListener
    from mycelium.proxy.listeners.tcp_routing import TcpRouting

# How long a client of a TLS port has to send its ClientHello; a real one sends it as
# soon as it connects.
HELLO_TIMEOUT = 10.0  # seconds


class GatewayConnection(Undecided):
    def __init__(self, routing: TcpRouting, port: int, family: PortFamily) -> None:
        super().__init__()
        self._routing = routing
        self._port = port
        self._family = family
        self._peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._peer = peer_text(transport)
        if self._family == "tcp":
            listener = self._listener(None)
            if listener is None:
                self._refuse("gateway_no_listener", f"no listener on port {self._port}")
                return
            self._relay(listener)
            return
        self._timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT, self._silent)

    def data_received(self, data: bytes) -> None:
        self._held += data
        hello = read_client_hello(self._held)
        if hello is None:
            return
        if hello == "not_tls":
            self._refuse("gateway_not_tls", f"port {self._port} takes TLS only")
            return
        listener = self._listener(hello.server_name)
        if listener is None:
            name = hello.server_name
            self._refuse(
                "gateway_unknown_sni",
                f"no listener on port {self._port} serves "
                + (f"server name {name!r}" if name else "clients that name no server (SNI)"),
            )
            return
        if listener.tls is None:
            self._relay(listener)
        else:
            self._terminate(listener)

    def eof_received(self) -> bool:
        self._refuse("gateway_not_tls", "the client ended before its ClientHello")
        return False

    # -- decisions ---------------------------------------------------------------------

    def _listener(self, name: str | None) -> ServedListener | None:
        gateway = self._routing.core.active.gateway
        return gateway.listener(self._port, name) if gateway is not None else None

    def _decision(self, listener: ServedListener) -> RelayTo | Refuse:
        core = self._routing.core
        owner = f"gateway listener {listener.config.name}"
        return relay_to_backends(core, core.active, listener.config.tcp_backends, self._port, owner)

    def _relay(self, listener: ServedListener) -> None:
        transport = self._take()
        if transport is not None:
            decision = self._decision(listener)
            self._routing.relay_or_refuse(transport, decision, self._held, False, self._peer)

    def _terminate(self, listener: ServedListener) -> None:
        transport = self._take()
        if transport is None:
            return
        assert listener.tls is not None
        routing, core, port = self._routing, self._routing.core, self._port
        if listener.config.protocol == "HTTPS":
            http = GatewayListener(port)

            def inner() -> asyncio.Protocol:
                return listener_protocol(core, http)

        else:
            decision, peer = self._decision(listener), self._peer

            def inner() -> asyncio.Protocol:
                return _RelayWhenDecrypted(routing, decision, peer)

        # The edge's clients come from outside the mesh: no SVID to check.
        session = TlsSession(listener.tls, server_side=True)
        layer = TlsLayer(session, inner, core.counters, counter_prefix="gateway_tls")
        self._terminate_tls(transport, layer)

    def _silent(self) -> None:
        self._timer = None
        self._refuse("gateway_silent", f"no ClientHello within {HELLO_TIMEOUT:g} s")

    def _refuse(self, counter: str, why: str) -> None:
        transport = self._take()
        if transport is None:
            return
        core = self._routing.core
        core.refused(counter, self._peer)
        core.log.info("gateway port %d: %s", self._port, why)
        transport.close()


class _RelayWhenDecrypted(asyncio.Protocol):
    """The TLS layer's inner protocol for a terminating TLS listener: relays the
    plaintext at once."""

    def __init__(self, routing: TcpRouting, decision: RelayTo | Refuse, peer: str) -> None:
        self._routing = routing
        self._decision = decision
        self._peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        plaintext = cast(asyncio.Transport, transport)
        self._routing.relay_or_refuse(plaintext, self._decision, b"", False, self._peer)
