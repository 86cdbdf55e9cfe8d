"""An opaque inbound port under PeerAuthentication: the mesh's mTLS is ended here,
plaintext is let through or refused as the port's mode says.

Opaque bytes are never parsed, but the first TLS record is: a sidecar's ClientHello
offers the mesh's ALPN (`judge_client_hello`), which tells it apart from an app's own
TLS (relayed untouched, like any plaintext) before anything is decrypted.
- STRICT: the mesh's mTLS only. Anything else is refused (`mtls_refused_plaintext`),
  and a client that sends nothing is closed after `HANDSHAKE_TIMEOUT`.
- PERMISSIVE: the mesh's mTLS is ended; anything else goes to the app as it came. A
  client that says nothing for `DETECTION_TIMEOUT` is taken for a plaintext client of
  a server-speaks-first protocol and relayed, so its banner comes 300 ms late; declare
  such a port STRICT (callers in the mesh) or DISABLE to skip the wait.
(DISABLE never gets here: the router relays at once.)

Authorization runs once the peer is known, with its SPIFFE ID when it came through mTLS.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, cast

from mycelium.discovery import config as cfg
from mycelium.identity.alpn import MESH_PEER_ALPN
from mycelium.identity.tls import spiffe_peer
from mycelium.net.tls_layer import TlsLayer
from mycelium.net.tls_session import TlsSession
from mycelium.proxy.listeners.undecided import Undecided
from mycelium.proxy.protocols.detect import DETECTION_TIMEOUT
from mycelium.proxy.protocols.peer_preamble import PreambleError, PreambleReader
from mycelium.proxy.protocols.tls_hello import judge_client_hello

if TYPE_CHECKING:
    from mycelium.proxy.core import ProxyCore

# How long a STRICT port waits for a ClientHello: a sidecar sends it as it connects.
HANDSHAKE_TIMEOUT = 10.0  # seconds


class InboundAdmission(Protocol):
    """Where a connection goes once its TLS (or its absence) is settled (`TcpRouting`)."""

    core: ProxyCore

    def admit(
        self,
        transport: asyncio.Transport,
        inbound: cfg.InboundPort,
        peer: str,
        principal: str | None,
        *,
        held: bytes,
        eof: bool,
        introduction: bytes | None = None,
    ) -> None:
        """Relay the connection to the app, or refuse it by policy."""
        ...


class OpaqueInbound(Undecided):
    """Takes over a connection whose router already decided it is `inbound`'s."""

    def __init__(self, routing: InboundAdmission, inbound: cfg.InboundPort, peer: str) -> None:
        super().__init__()
        self._routing = routing
        self._inbound = inbound
        self._peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        wait = HANDSHAKE_TIMEOUT if self._inbound.mtls == "STRICT" else DETECTION_TIMEOUT
        self._timer = asyncio.get_running_loop().call_later(wait, self._silent)

    def data_received(self, data: bytes) -> None:
        self._held += data
        verdict = judge_client_hello(self._held)
        if verdict == "mesh":
            self._end_mtls()
        elif verdict == "other":
            self._plaintext(eof=False)

    def eof_received(self) -> bool:
        self._plaintext(eof=True)
        return True

    # -- decisions ---------------------------------------------------------------------

    def _silent(self) -> None:
        self._timer = None
        self._plaintext(eof=False)

    def _plaintext(self, *, eof: bool) -> None:
        transport = self._take()
        if transport is None:
            return
        core = self._routing.core
        if self._inbound.mtls == "STRICT":
            core.counters["mtls_refused_plaintext"] += 1
            core.log.info(
                "refused a connection from %s to STRICT port %d: it did not start the mesh's mTLS",
                self._peer,
                self._inbound.port,
            )
            transport.abort()
            return
        self._routing.admit(transport, self._inbound, self._peer, None, held=self._held, eof=eof)

    def _end_mtls(self) -> None:
        transport = self._take()
        if transport is None:
            return
        routing, inbound, peer = self._routing, self._inbound, self._peer
        core = routing.core
        if core.svid is None:  # STRICT before our certificate came: nothing to end it with
            core.counters["mtls_refused_no_certificate"] += 1
            transport.abort()
            return
        layer = TlsLayer(
            TlsSession(core.server_tls(), server_side=True, verify_peer=spiffe_peer()),
            lambda: _AdmitWhenVerified(routing, inbound, peer),
            core.counters,
        )
        self._terminate_tls(transport, layer)


class _AdmitWhenVerified(asyncio.Protocol):
    """The TLS layer's inner protocol: hands the plaintext to the app's relay, once the
    calling proxy's introduction is off it when its ALPN says one comes first."""

    def __init__(self, routing: InboundAdmission, inbound: cfg.InboundPort, peer: str) -> None:
        self._routing = routing
        self._inbound = inbound
        self._peer = peer
        self._preamble: PreambleReader | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._plaintext = cast(asyncio.Transport, transport)
        if transport.get_extra_info("alpn") == MESH_PEER_ALPN:
            self._preamble = PreambleReader()
            # It is sent with the first bytes: a caller that holds it back is cut off.
            self._timer = asyncio.get_running_loop().call_later(
                HANDSHAKE_TIMEOUT, self._no_introduction
            )
            return
        self._admit(b"", None)

    def data_received(self, data: bytes) -> None:
        # Only while the preamble is awaited: the relay takes the transport after.
        assert self._preamble is not None
        try:
            rest = self._preamble.feed(data)
        except PreambleError as exc:
            self._refuse(str(exc))
            return
        if self._preamble.introduction is not None:
            self._admit(rest, self._preamble.introduction)

    def eof_received(self) -> bool:
        self._refuse("the caller closed before its introduction")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _admit(self, held: bytes, introduction: bytes | None) -> None:
        self._cancel_timer()
        principal = self._plaintext.get_extra_info("peer_identity")
        uri = principal.uri if principal is not None else None
        self._routing.admit(
            self._plaintext,
            self._inbound,
            self._peer,
            uri,
            held=held,
            eof=False,
            introduction=introduction,
        )

    def _no_introduction(self) -> None:
        self._timer = None
        self._refuse(f"no introduction within {HANDSHAKE_TIMEOUT:g} s")

    def _refuse(self, why: str) -> None:
        self._cancel_timer()
        core = self._routing.core
        core.refused("bad_introduction", self._peer)
        core.log.info("refused a mesh connection from %s: %s", self._peer, why)
        self._plaintext.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
