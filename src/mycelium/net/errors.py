"""The net layer's errors: what went wrong moving bytes or setting up a connection.

Users above (the proxy, the runtime) translate them into their own families at their
edge, or record them as they are (a relay's `RelayResult.error`).
"""

from __future__ import annotations

from mycelium.errors import MeshError


class NetError(MeshError):
    """Base of the net layer's errors."""


class TlsRefused(NetError):
    """A TLS handshake was refused; `reason` is one word, for counters
    (`mtls_refused_<reason>`), `detail` the sentence for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NamespaceError(NetError):
    """A network namespace could not be entered."""


class ConnectFailed(NetError):
    """The upstream refused the connection, could not be reached, or failed its TLS
    handshake."""


class ConnectTimeout(NetError):
    """The upstream did not accept a connection within the connect timeout."""


class UpstreamLost(NetError):
    """The upstream's connection ended abnormally (reset, broken pipe) while relaying."""


class DownstreamLost(NetError):
    """The client's connection ended abnormally while the relay was using it."""


class RelayIdle(NetError):
    """No byte moved either way for the relay's idle timeout."""


class RelayAborted(NetError):
    """The relay was ended on purpose (drain, shutdown, policy)."""
