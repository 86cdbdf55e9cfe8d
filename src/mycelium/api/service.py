"""Service: a named set of workloads (chosen by labels) and the ports they serve.

Invariants: at least one port; port names and port numbers are unique within a Service;
`targetPort` is always set after validation (it defaults to `port`), so readers never
have to apply the default themselves.

An *external* Service (`external: true`, as Istio's ServiceEntry with location
MESH_EXTERNAL) names a destination outside the mesh: it selects no workloads, lists its
`endpoints` (IP addresses, no proxy, no identity: always called in plaintext) and is
called by its `hosts`. Either it has endpoints and no selector, or it is not external.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from mycelium.api.meta import ApiModel, Resource, repeated
from mycelium.api.scalars import DnsLabel, Hostname, IPv4Address, Labels, PortNumber

type ServiceProtocol = Literal["HTTP", "HTTP2", "GRPC", "TCP", "TLS"]


# A port whose name starts with one of these (alone, or before a dash) and that states
# no protocol has this one.
_PROTOCOL_BY_NAME: dict[str, ServiceProtocol] = {"grpc": "GRPC", "http2": "HTTP2"}


def _target_port_schema(schema: dict[str, Any]) -> None:
    # The default of targetPort is `port`, which JSON Schema cannot say: drop the null.
    schema["properties"]["targetPort"].pop("default", None)


class ServicePort(ApiModel):
    model_config = ConfigDict(json_schema_extra=_target_port_schema)

    name: DnsLabel
    port: PortNumber
    """The port clients connect to."""
    target_port: PortNumber = None  # type: ignore[assignment]  # always filled in, see below
    """The port the workloads listen on; defaults to `port`."""
    protocol: ServiceProtocol = "HTTP"
    opaque: bool = False
    """Server speaks first (MySQL, SMTP...): never sniff, treat as opaque TCP."""

    @model_validator(mode="before")
    @classmethod
    def _protocol_from_the_name(cls, data: Any) -> Any:
        # As Istio reads a port's name when it states no protocol: `grpc`, `grpc-api`,
        # `http2-api` say how the workloads are spoken to (gRPC-Web is HTTP/1.1's).
        if not isinstance(data, dict) or "protocol" in data:
            return data
        name = data.get("name")
        if isinstance(name, str) and not name.startswith("grpc-web"):
            prefix = name.split("-", 1)[0]
            if prefix in _PROTOCOL_BY_NAME:
                return {**data, "protocol": _PROTOCOL_BY_NAME[prefix]}
        return data

    @model_validator(mode="before")
    @classmethod
    def _target_port_defaults_to_port(cls, data: Any) -> Any:
        if not isinstance(data, dict) or (
            data.get("targetPort", data.get("target_port")) is not None
        ):
            return data
        port = data.get("port")
        # Copy only a plausible port: an invalid one is reported once, on `port`.
        if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
            rest = {k: v for k, v in data.items() if k not in ("targetPort", "target_port")}
            return {**rest, "targetPort": port}
        return data


class ExternalEndpoint(ApiModel):
    """An address outside the mesh that an external Service sends to."""

    address: IPv4Address
    ports: dict[DnsLabel, PortNumber] = {}
    """Where this address listens, by the Service's port names; a port left out is
    reached on its `targetPort`."""


class ServiceSpec(ApiModel):
    selector: Labels = {}
    """Labels of the workloads behind this Service; an empty selector selects none."""
    ports: Annotated[list[ServicePort], Field(min_length=1)]
    vip: IPv4Address | None = None
    """The virtual IP clients may connect to; when left out, the controller allocates one
    from 198.19.0.0/16 and keeps it across re-applies."""
    hosts: list[Hostname] = []
    """Extra host names that resolve to this Service, besides `<name>.<namespace>`."""
    external: bool = False
    """A destination outside the mesh (no proxy, no identity): its `endpoints` are
    called in plaintext, and through the namespace's egress gateway when it has one."""
    endpoints: list[ExternalEndpoint] = []
    """External Services only: the addresses they send to."""

    @field_validator("ports")
    @classmethod
    def _ports_unique(cls, ports: list[ServicePort]) -> list[ServicePort]:
        if names := repeated([p.name for p in ports]):
            raise ValueError(f"port names must be unique; repeated: {', '.join(names)}")
        if numbers := repeated([p.port for p in ports]):
            raise ValueError(
                f"port numbers must be unique; repeated: {', '.join(map(str, numbers))}"
            )
        return ports

    @model_validator(mode="after")
    def _external_has_endpoints_not_selector(self) -> Self:
        if not self.external:
            if self.endpoints:
                raise ValueError(
                    "endpoints are only for external Services: set external: true, or "
                    "remove endpoints (a mesh Service finds its workloads by selector)"
                )
            return self
        if self.selector:
            raise ValueError(
                "an external Service selects no workloads (nothing outside the mesh runs "
                "a proxy): remove selector and list the addresses under endpoints"
            )
        if not self.endpoints:
            raise ValueError(
                "an external Service needs endpoints: the addresses outside the mesh it "
                "sends to, e.g. endpoints: [{address: 203.0.113.10}]"
            )
        names = {p.name for p in self.ports}
        for endpoint in self.endpoints:
            if unknown := sorted(set(endpoint.ports) - names):
                raise ValueError(
                    f"endpoint {endpoint.address} names port {', '.join(unknown)}, which "
                    f"is not a port of this Service (its ports: {', '.join(sorted(names))})"
                )
        return self


class Service(Resource):
    """A named set of workloads and the ports they serve."""

    kind: Literal["Service"] = "Service"
    spec: ServiceSpec
