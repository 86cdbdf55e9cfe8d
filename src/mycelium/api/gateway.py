"""Gateway: listeners of an edge proxy (ingress or egress), and how it handles TLS.

Routes attach to a Gateway through their parentRefs. Invariants: at least one listener;
listener names and (port, hostname) pairs are unique; HTTPS and TLS listeners say how to
handle TLS, HTTP and TCP listeners do not; terminating TLS needs a certificate and key.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from mycelium.api.meta import ApiModel, Resource, repeated
from mycelium.api.scalars import DnsLabel, Hostname, Labels, PortNumber

type ListenerProtocol = Literal["HTTP", "HTTPS", "TCP", "TLS"]


class GatewayTLS(ApiModel):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    """Terminate: the gateway decrypts. Passthrough: it routes by SNI, still encrypted."""
    certificate_file: str | None = None
    """PEM certificate chain, read by the gateway proxy."""
    key_file: str | None = None
    """PEM private key, read by the gateway proxy; it never leaves that machine."""


class Listener(ApiModel):
    name: DnsLabel
    port: PortNumber
    protocol: ListenerProtocol
    hostname: Hostname | None = None
    """Only this host (SNI or Host header); any host when absent."""
    tls: GatewayTLS | None = None

    @model_validator(mode="after")
    def _tls_fits_protocol(self) -> Self:
        if self.protocol in ("HTTP", "TCP"):
            if self.tls is not None:
                raise ValueError(
                    f"tls does not apply to a {self.protocol} listener: use HTTPS or TLS, "
                    "or remove tls"
                )
            return self
        if self.tls is None:
            raise ValueError(f"a {self.protocol} listener needs tls (mode, certificate, key)")
        if self.protocol == "HTTPS" and self.tls.mode == "Passthrough":
            raise ValueError(
                "an HTTPS listener decrypts to route by HTTP: for passthrough use protocol TLS"
            )
        if self.tls.mode == "Terminate" and (
            self.tls.certificate_file is None or self.tls.key_file is None
        ):
            raise ValueError("terminating TLS needs tls.certificateFile and tls.keyFile")
        return self


class GatewaySpec(ApiModel):
    selector: Annotated[Labels, Field(min_length=1)]
    """Labels of the gateway proxy workloads that run these listeners."""
    listeners: Annotated[list[Listener], Field(min_length=1)]

    @field_validator("listeners")
    @classmethod
    def _listeners_distinct(cls, listeners: list[Listener]) -> list[Listener]:
        if names := repeated(listener.name for listener in listeners):
            raise ValueError(f"listener names must be unique; repeated: {', '.join(names)}")
        if pairs := repeated((listener.port, listener.hostname) for listener in listeners):
            described = ", ".join(f"port {port} host {host or '*'}" for port, host in pairs)
            raise ValueError(
                f"two listeners serve the same port and hostname ({described}): "
                "give them different hostnames, or merge them"
            )
        return listeners


class Gateway(Resource):
    """An edge proxy's listeners, for traffic entering or leaving the mesh."""

    kind: Literal["Gateway"] = "Gateway"
    spec: GatewaySpec
