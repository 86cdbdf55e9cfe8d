"""Namespace: a cluster-scoped grouping that chooses the data-plane mode of its workloads.

In "sidecar" mode every workload gets its own proxy; in "ambient" mode the node's
ztunnel carries L4 traffic and an optional waypoint (a Gateway in the namespace) adds L7
policy. A waypoint only makes sense in ambient mode, so it is refused in sidecar mode.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import model_validator

from mycelium.api.meta import ApiModel, ClusterObjectMeta, Resource
from mycelium.api.scalars import DnsLabel

type DataPlaneMode = Literal["sidecar", "ambient"]


class NamespaceSpec(ApiModel):
    mode: DataPlaneMode = "sidecar"
    """How workloads of this namespace join the mesh: one proxy each, or the node's ztunnel."""
    waypoint: DnsLabel | None = None
    """Ambient only: the name of the Gateway in this namespace that serves as its L7 waypoint."""

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
