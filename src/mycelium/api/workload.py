"""Workload: one registered instance of a service (a pod, a process, a VM).

Proxies register their workload with a lease, so it disappears when the proxy does;
users may also apply static Workloads for machines without a proxy. A Service selects
workloads by `metadata.labels`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mycelium.api.meta import ApiModel, Resource
from mycelium.api.scalars import DnsLabel, IPAddress, PortNumber

# Relative weights beyond this are a typo rather than a plan; it also keeps weighted
# balancer arithmetic small.
MAX_WORKLOAD_WEIGHT = 1000


class WorkloadPort(ApiModel):
    name: DnsLabel | None = None
    port: PortNumber


class WorkloadSpec(ApiModel):
    address: IPAddress
    service_account: DnsLabel = "default"
    """The identity it runs as: spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>."""
    ports: list[WorkloadPort] = []
    node: str | None = None
    """The node (host) it runs on; ztunnel serves only workloads of its own node."""
    weight: Annotated[int, Field(ge=1, le=MAX_WORKLOAD_WEIGHT)] = 1
    """Relative share of traffic among the workloads of a Service; to drain, mark unhealthy."""
    healthy: bool = True


class Workload(Resource):
    """A registered instance (pod, process or VM) that Services select by its labels."""

    kind: Literal["Workload"] = "Workload"
    spec: WorkloadSpec
