"""Topics: the names of what a compiled bundle depends on, and which of them a store
change touches.

Every bundle compiler adds to its bundle the topics it read; `topics_of_change` maps a
change from one resource version to another to the topics it can affect. The discovery
server recompiles exactly the bundles whose topics a change touched, so a topic that a
compiler reads but forgets to name is a proxy left with stale config: both sides name
topics through the functions here, never by hand.

The vocabulary:
- `services`: any Service appearing, going or changing its vip or hosts (what a name or
  an address resolves to);
- `service:<svc>.<ns>`: one Service, the routes attached to it, its DestinationPolicy
  and the Workloads it selects;
- `policy:<ns>`: a namespace's policies (PeerAuthentication, AuthorizationPolicy,
  RateLimitPolicy) and its Namespace resource (its egress);
- `workload:<ns>/<name>`: one Workload (a proxy's own);
- `gateways:<ns>`: the Gateways of a namespace and the routes attached to them;
- `gateway-workloads:<ns>/<gateway>`: the Workloads a Gateway's selector matches (its
  proxies).
"""

from __future__ import annotations

from typing import Any

from mycelium.control.state import MeshState, labels_match, service_key

SERVICES_TOPIC = "services"


def service_topic(svc_name: str) -> str:
    """The topic of the Service `svc_name` (`<name>.<namespace>`)."""
    return f"service:{svc_name}"


def policy_topic(namespace: str) -> str:
    """The topic of `namespace`'s policies and its Namespace resource."""
    return f"policy:{namespace}"


def workload_topic(namespace: str, name: str) -> str:
    return f"workload:{namespace}/{name}"


def gateway_topic(namespace: str) -> str:
    """The topic of the Gateways in `namespace` and the routes attached to them."""
    return f"gateways:{namespace}"


def gateway_workloads_topic(namespace: str, gateway: str) -> str:
    """The topic of the Workloads a Gateway's selector matches (its proxies)."""
    return f"gateway-workloads:{namespace}/{gateway}"


def topics_of_change(state: MeshState, old: Any | None, new: Any | None) -> set[str]:
    """Which compiled pieces a change from `old` to `new` (either may be None) can affect."""
    topics: set[str] = set()
    for resource in (old, new):
        if resource is None:
            continue
        kind, ns, name = resource.kind, resource.metadata.namespace, resource.metadata.name
        if kind == "Service":
            topics.update({SERVICES_TOPIC, service_topic(service_key(ns, name)), policy_topic(ns)})
        elif kind == "Workload":
            topics.add(workload_topic(ns, name))
            for svc in state.services_selecting(ns, resource.metadata.labels):
                topics.add(service_topic(service_key(ns, svc.metadata.name)))
            for gateway in state.of_kind("Gateway", ns):  # egress routes send to its proxies
                if labels_match(gateway.spec.selector, resource.metadata.labels):
                    topics.add(gateway_workloads_topic(ns, gateway.metadata.name))
        elif kind == "Gateway":
            topics.update({gateway_topic(ns), gateway_workloads_topic(ns, name)})
        elif kind in ("HTTPRoute", "TCPRoute"):
            for parent in resource.spec.parent_refs:
                parent_ns = parent.namespace or ns
                if parent.kind == "Gateway":
                    topics.add(gateway_topic(parent_ns))
                else:
                    topics.add(service_topic(service_key(parent_ns, parent.name)))
            if kind == "HTTPRoute" and any(
                rl.spec.target_ref.kind == "HTTPRoute" and rl.spec.target_ref.name == name
                for rl in state.of_kind("RateLimitPolicy", ns)
            ):
                topics.add(policy_topic(ns))  # the serving side counts this route's requests
        elif kind == "DestinationPolicy":
            host = resource.spec.host.split(".")
            host_ns = host[1] if len(host) > 1 else ns
            topics.add(service_topic(service_key(host_ns, host[0])))
        elif kind in ("PeerAuthentication", "AuthorizationPolicy", "RateLimitPolicy"):
            topics.add(policy_topic(ns))
        elif kind == "Namespace":
            topics.add(policy_topic(name))
    return topics
