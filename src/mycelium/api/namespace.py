"""Namespace: a cluster-scoped grouping that chooses the data-plane mode of its workloads.

In "sidecar" mode every workload gets its own proxy; in "ambient" mode the node's
ztunnel carries L4 traffic and an optional waypoint (a Gateway in the namespace) adds L7
policy. A waypoint only makes sense in ambient mode, so it is refused in sidecar mode.

`egress` says where the namespace's sidecars may call outside the mesh: anywhere
(`ALLOW_ANY`, the default: an unknown destination is relayed as addressed) or only to
Services in the registry (`REGISTRY_ONLY`: anything else is refused). With `gateway`,
calls to external Services go through that Gateway's proxies (the egress gateway),
the only ones that then connect outside.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import model_validator

from mycelium.api.meta import ApiModel, ClusterObjectMeta, Resource
from mycelium.api.scalars import DnsLabel

type DataPlaneMode = Literal["sidecar", "ambient"]
type EgressPolicy = Literal["ALLOW_ANY", "REGISTRY_ONLY"]


class NamespaceEgress(ApiModel):
    policy: EgressPolicy = "ALLOW_ANY"
    """ALLOW_ANY: a destination the registry does not know is relayed as addressed;
    REGISTRY_ONLY: it is refused (HTTP 502 `egress_denied`, TCP closed)."""
    gateway: DnsLabel | None = None
    """The Gateway of this namespace whose proxies carry every call to an external
    Service (the egress gateway); without it, sidecars call external Services directly."""


class NamespaceSpec(ApiModel):
    mode: DataPlaneMode = "sidecar"
    """How workloads of this namespace join the mesh: one proxy each, or the node's ztunnel."""
    waypoint: DnsLabel | None = None
    """Ambient only: the name of the Gateway in this namespace that serves as its L7 waypoint."""
    egress: NamespaceEgress = NamespaceEgress()
    """Where the namespace's workloads may call outside the mesh, and through what."""

    @model_validator(mode="after")
    def _waypoint_needs_ambient(self) -> Self:
        if self.waypoint is not None and self.mode != "ambient":
            raise ValueError(
                "a waypoint only applies to ambient namespaces: set mode: ambient, "
                "or remove waypoint"
            )
        return self


class Namespace(Resource):
    """A namespace and its data-plane mode (cluster-scoped)."""

    cluster_scoped: ClassVar[bool] = True

    kind: Literal["Namespace"] = "Namespace"
    metadata: ClusterObjectMeta
    spec: NamespaceSpec = NamespaceSpec()
