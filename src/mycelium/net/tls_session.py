"""One TLS connection as a byte-in, byte-out state machine (no sockets).

The proxy detects a peer's protocol from the first bytes it reads, so by the time it
knows a connection is TLS the ClientHello has already left the socket: asyncio's
`start_tls` cannot take over from there. This session can: the caller feeds it every
ciphertext byte it has (`receive`), writes out what it produces (`outgoing`), and
moves plaintext through `send` and the return value of `receive`. Underneath it is
OpenSSL through `ssl.MemoryBIO`, with whatever context the caller built.

Who the peer is belongs to the caller: a `verify_peer` callback runs once the handshake
is done, and its answer is `peer` (the mesh passes `identity.tls.spiffe_peer`, whose
answer is the peer's SPIFFE ID; without a callback `peer` stays None, as for a gateway's
clients outside the mesh). Failures raise `TlsRefused` with a word for counters:
`not_tls` (the bytes are not a TLS handshake, e.g. plaintext to a STRICT port),
`untrusted_peer` (no certificate, another CA, or expired), `handshake_failed`
(anything else OpenSSL refused), or the callback's own word.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable

from mycelium.net.errors import TlsRefused

# Reads drain OpenSSL's buffer in pieces of this size.
READ_CHUNK = 65536

# Judges the peer of a finished handshake: returns who it is, or raises `TlsRefused`.
type PeerCheck = Callable[[ssl.SSLObject], object]


class TlsSession:
    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        verify_peer: PeerCheck | None = None,
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side)
        self._server_side = server_side
        self._verify_peer = verify_peer
        self._pending: list[bytes] = []  # plaintext sent before the handshake finished
        self.handshake_done = False
        self.peer: object | None = None  # what `verify_peer` answered
        self.closed_by_peer = False
        self._seen_bytes = 0
        if not server_side:
            self._handshake()  # the client speaks first: its ClientHello is ready now

    @property
    def alpn(self) -> str | None:
        """The protocol the handshake settled on (None before it, or without ALPN)."""
        return self._tls.selected_alpn_protocol() if self.handshake_done else None

    def receive(self, data: bytes) -> bytes:
        """Ciphertext from the peer in; the plaintext it completes out (maybe b"")."""
        first = not self.handshake_done and self._server_side and self._seen_bytes == 0
        if first and data and data[0] != 0x16:  # not a TLS handshake record: not TLS
            raise TlsRefused("not_tls", "the peer did not start a TLS handshake")
        self._seen_bytes += len(data)
        self._incoming.write(data)
        if not self.handshake_done:
            self._handshake()
            if not self.handshake_done:
                return b""
        return self._read()

    def send(self, plaintext: bytes) -> None:
        """Plaintext to encrypt; held until the handshake is done."""
        if not self.handshake_done:
            self._pending.append(plaintext)
            return
        self._tls.write(plaintext)

    def outgoing(self) -> bytes:
        """Ciphertext to write to the peer now."""
        return self._outgoing.read()

    def close(self) -> None:
        """Say goodbye (close_notify); the bytes come out of `outgoing`."""
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            self._tls.unwrap()  # we do not wait for the peer's own close_notify

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLCertVerificationError as exc:
            raise TlsRefused("untrusted_peer", exc.verify_message or str(exc)) from None
        except ssl.SSLError as exc:
            reason = "untrusted_peer" if _about_certificates(exc) else "handshake_failed"
            raise TlsRefused(reason, exc.reason or str(exc)) from None
        if self._verify_peer is not None:
            # Before `handshake_done`: plaintext held for a refused peer never leaves.
            self.peer = self._verify_peer(self._tls)
        self.handshake_done = True
        pending, self._pending = self._pending, []
        for plaintext in pending:
            self._tls.write(plaintext)

    def _read(self) -> bytes:
        pieces = []
        while True:
            try:
                piece = self._tls.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed_by_peer = True
                break
            except ssl.SSLError as exc:
                # TLS 1.3: a client learns only now that the server refused its certificate.
                reason = "untrusted_peer" if _about_certificates(exc) else "handshake_failed"
                raise TlsRefused(reason, exc.reason or str(exc)) from None
            if not piece:  # the peer's close_notify, as OpenSSL reports it here
                self.closed_by_peer = True
                break
            pieces.append(piece)
        return b"".join(pieces)


def _about_certificates(exc: ssl.SSLError) -> bool:
    text = f"{exc.reason or ''} {exc}".upper()
    return "CERTIFICATE" in text or "UNKNOWN_CA" in text or "PEER_DID_NOT_RETURN" in text
