"""Errors of the discovery protocol and its client."""

from mycelium.errors import MeshError


class DiscoveryError(MeshError):
    """Something went wrong talking to the controller."""


class ProtocolViolation(DiscoveryError):
    """A peer sent bytes or a message that the protocol does not allow."""


class SnapshotRejected(DiscoveryError):
    """The proxy refused a pushed snapshot; the reason travels back in a NACK."""


class ControllerRefused(DiscoveryError):
    """The controller closed the stream with a refusal (bad token, wrong protocol...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"the controller refused this proxy ({code}): {message}")
        self.code = code


class CertificateRefusedError(MeshError):
    """The controller would not sign our CSR; `reason` is its one-word reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
