"""The config compiler: resources and registered workloads in, per-proxy config out.

Pure functions over a `MeshState`; no I/O, no clock, no randomness. A proxy's snapshot
is its `inbound` entry plus, for every service it subscribed to, that service's route
and the clusters and endpoints the route can send to (a gateway proxy also gets its
`gateway` entry: see gateway_compiler) — so a snapshot grows with what
the proxy talks to, not with the mesh.

A caller's route to an external Service depends on the caller's namespace: when its
Namespace names an egress gateway, the route sends every request to that Gateway's
proxies (cluster `egress~<gateway>.<ns>`, over mTLS) instead of the Service's own
endpoints, which only the gateway's snapshot then holds.

Each compiled piece also names the *topics* it depends on (`service:<svc>.<ns>`,
`policy:<ns>` (a namespace's policies and its Namespace resource), `workload:<ns>/<name>`,
`gateways:<ns>`, `gateway-workloads:<ns>/<gateway>`); `topics_of_change` maps a
store change to the topics it touches, which is how the discovery server knows whom to
recompile and push.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mycelium.api.namespace import NamespaceEgress
from mycelium.control.hostnames import intersect_hostnames
from mycelium.control.state import MeshState, all_hosts, labels_match, service_key
from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import NodeInfo, canonical_json, encode_entry

DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    name: str
    version: str
    body: dict[str, Any]
    wire: bytes  # the entry as it travels in a push, serialised once for every proxy


@dataclass(slots=True)
class Bundle:
    """Entries compiled together, and the topics whose change invalidates them."""

    entries: dict[str, CompiledEntry] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    _version: str | None = None

    def add(self, name: str, body: cfg._Body) -> None:
        data = cfg.to_body(body)
        version = hashlib.blake2b(canonical_json(data), digest_size=8).hexdigest()
        self.entries[name] = CompiledEntry(name, version, data, encode_entry(name, version, data))
        self._version = None

    @property
    def version(self) -> str:
        """A hash of the entries' names and versions: equal bundles, equal versions."""
        if self._version is None:
            digest = hashlib.blake2b(digest_size=8)
            for name in sorted(self.entries):
                digest.update(f"{name}={self.entries[name].version};".encode())
            self._version = digest.hexdigest()
        return self._version


def spiffe_id(
    namespace: str, service_account: str, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


# --- outbound: a service's route, clusters and endpoints -----------------------------------


def compile_service(state: MeshState, reference: str, from_namespace: str) -> Bundle:
    """Everything a caller needs to reach the service that `reference` names."""
    bundle = Bundle()
    service = state.resolve_service(reference, from_namespace)
    if service is None or not state.resolves_by_name(reference, service):
        # An address, an extra host name or a miss can change meaning whenever any
        # service appears, goes or changes its VIP or hosts.
        bundle.topics.add("services")
    if service is None:
        bundle.add(
            f"unresolved/{reference}",
            cfg.Unresolved(
                subscription=reference,
                reason=f"no Service named {reference!r} is visible from namespace "
                f"{from_namespace!r}",
            ),
        )
        return bundle
    svc_name = service_key(service.metadata.namespace, service.metadata.name)
    bundle.topics.add(f"service:{svc_name}")
    ns = service.metadata.namespace
    if service.spec.external:
        bundle.topics.add(f"policy:{from_namespace}")  # the caller's Namespace: its egress
        gateway = egress_gateway(state, from_namespace)
        if gateway is not None:
            _add_route_through_egress_gateway(state, service, from_namespace, gateway, bundle)
            return bundle

    http_rules: list[cfg.HttpRule] = []
    for route in state.http_routes_for(ns, service.metadata.name):
        for index, rule in enumerate(route.spec.rules):
            http_rules.append(compile_http_rule(route, index, rule, bundle, state))
    default_backend = cfg.WeightedCluster(cluster=svc_name, weight=1)
    if not http_rules:
        # No HTTPRoute: every request goes to the service. With one, a request no rule
        # matches is answered 404 `no_route`, as the Gateway API says it must be.
        http_rules.append(cfg.HttpRule(name="default", backends=[default_backend]))
    _add_cluster(state, service, None, bundle)

    tcp_backends: list[cfg.WeightedCluster] = []
    for route in state.tcp_routes_for(ns, service.metadata.name):
        for rule in route.spec.rules:
            tcp_backends.extend(
                backend_cluster(ref, route.metadata.namespace, bundle, state)
                for ref in rule.backend_refs
            )
        break  # the first TCPRoute (by name) wins; several make no sense for one port
    if not tcp_backends:
        tcp_backends = [default_backend]

    bundle.add(
        f"route/{svc_name}",
        cfg.ServiceRoute(
            service=svc_name,
            hosts=all_hosts(service),
            vip=str(service.spec.vip) if service.spec.vip else None,
            ports=_route_ports(service),
            http_rules=http_rules,
            tcp_backends=tcp_backends,
        ),
    )
    return bundle


def namespace_egress(state: MeshState, namespace: str) -> NamespaceEgress:
    """`namespace`'s egress settings (the defaults when it has no Namespace resource)."""
    resource = state.get("Namespace", "", namespace)
    return resource.spec.egress if resource is not None else NamespaceEgress()


def egress_gateway(state: MeshState, namespace: str) -> str | None:
    """The name of the Gateway that carries `namespace`'s calls to external Services."""
    return namespace_egress(state, namespace).gateway


def egress_cluster_name(namespace: str, gateway: str) -> str:
    """The cluster of an egress gateway's proxies; `~` keeps it apart from any Service's."""
    return f"egress~{gateway}.{namespace}"


def gateway_workloads_topic(namespace: str, gateway: str) -> str:
    """The topic of the Workloads a Gateway's selector matches (its proxies)."""
    return f"gateway-workloads:{namespace}/{gateway}"


def _add_route_through_egress_gateway(
    state: MeshState, service: Any, namespace: str, gateway_name: str, bundle: Bundle
) -> None:
    """A caller's route to external `service` when its `namespace` names an egress
    gateway: every request goes, over mTLS and with its Host kept, to the gateway's
    HTTP listener for the service's hosts; the gateway's HTTPRoutes take it from there.
    TCP ports get no backend (the gateway relays no opaque bytes outside yet), so the
    caller refuses their connections rather than going around the gateway."""
    svc_name = service_key(service.metadata.namespace, service.metadata.name)
    hosts = all_hosts(service)
    cluster_name = egress_cluster_name(namespace, gateway_name)
    bundle.topics.update(
        {gateway_topic(namespace), gateway_workloads_topic(namespace, gateway_name)}
    )
    gateway = state.get("Gateway", namespace, gateway_name)
    port = _egress_listener_port(gateway, service.spec.hosts) if gateway is not None else None
    endpoints = []
    if gateway is not None and port is not None:
        endpoints = [
            _workload_endpoint(wl, {str(port): port}, REGISTERED_BY in wl.metadata.annotations)
            for wl in state.workloads_of(gateway)
        ]
    endpoints.sort(key=lambda e: e.workload)
    # No listener (or no Gateway): a cluster without endpoints, so callers are answered
    # 503 naming it, never sent around the gateway.
    bundle.add(
        f"cluster/{cluster_name}",
        cfg.Cluster(name=cluster_name, service=f"{gateway_name}.{namespace}"),
    )
    bundle.add(
        f"endpoints/{cluster_name}", cfg.EndpointSet(cluster=cluster_name, endpoints=endpoints)
    )
    backend = cfg.WeightedCluster(cluster=cluster_name, port=port, weight=1)
    bundle.add(
        f"route/{svc_name}",
        cfg.ServiceRoute(
            service=svc_name,
            hosts=hosts,
            vip=str(service.spec.vip) if service.spec.vip else None,
            ports=_route_ports(service),
            http_rules=[
                cfg.HttpRule(name=f"egress/{namespace}/{gateway_name}", backends=[backend])
            ],
            tcp_backends=[],
        ),
    )


def _egress_listener_port(gateway: Any, hosts: list[str]) -> int | None:
    """The port of the Gateway's HTTP listener that serves one of `hosts` (by the
    Gateway API's hostname intersection), else of one that serves any host."""
    listeners = sorted(
        (listener for listener in gateway.spec.listeners if listener.protocol == "HTTP"),
        key=lambda listener: listener.port,
    )
    for listener in listeners:
        if listener.hostname is not None and any(
            intersect_hostnames(host, listener.hostname) for host in hosts
        ):
            return int(listener.port)
    return next((int(lst.port) for lst in listeners if lst.hostname is None), None)


def _route_ports(service: Any) -> list[cfg.ServicePort]:
    return [
        cfg.ServicePort(name=p.name, port=p.port, protocol=p.protocol, opaque=p.opaque)
        for p in service.spec.ports
    ]


def compile_http_rule(
    route: Any, index: int, rule: Any, bundle: Bundle, state: MeshState
) -> cfg.HttpRule:
    ns = route.metadata.namespace
    matches = [_route_match(m) for m in rule.matches]
    filters = rule.filters
    retries = None
    if rule.retries is not None:
        retries = cfg.RetryPolicy(
            attempts=rule.retries.attempts,
            per_try_timeout=rule.retries.per_try_timeout,
            retry_on=list(rule.retries.retry_on),
            retriable_status_codes=list(rule.retries.retriable_status_codes),
        )
    fault = None
    if rule.fault is not None:
        delay, abort = rule.fault.delay, rule.fault.abort
        fault = cfg.FaultPolicy(
            delay_seconds=delay.fixed_delay if delay else None,
            delay_percentage=delay.percentage if delay else 0.0,
            abort_status=abort.http_status if abort else None,
            abort_percentage=abort.percentage if abort else 0.0,
        )
    mirror = None
    if rule.mirror is not None:
        target = backend_cluster(rule.mirror.backend_ref, ns, bundle, state)
        mirror = cfg.MirrorPolicy(
            cluster=target.cluster, port=target.port, percentage=rule.mirror.percentage
        )
    return cfg.HttpRule(
        name=f"{ns}/{route.metadata.name}#{index}",
        matches=matches,
        backends=[backend_cluster(ref, ns, bundle, state) for ref in rule.backend_refs],
        timeout=rule.timeout,
        retries=retries,
        fault=fault,
        mirror=mirror,
        request_headers=_header_edits(filters.request_headers if filters else None),
        response_headers=_header_edits(filters.response_headers if filters else None),
        rewrite=_rewrite(filters.url_rewrite if filters else None),
    )


def _route_match(m: Any) -> cfg.RouteMatch:
    return cfg.RouteMatch(
        path=cfg.StringMatch(type=m.path.type, value=m.path.value) if m.path else None,
        headers=[cfg.KeyValueMatch(name=h.name, value=h.value, type=h.type) for h in m.headers],
        query_params=[
            cfg.KeyValueMatch(name=q.name, value=q.value, type=q.type) for q in m.query_params
        ],
        method=m.method,
    )


def _header_edits(edits: Any) -> cfg.HeaderEdits | None:
    if edits is None:
        return None
    return cfg.HeaderEdits(set=dict(edits.set), add=dict(edits.add), remove=list(edits.remove))


def _rewrite(rewrite: Any) -> cfg.Rewrite | None:
    if rewrite is None:
        return None
    path = rewrite.path
    return cfg.Rewrite(
        replace_prefix_match=path.replace_prefix_match if path else None,
        replace_full_path=path.replace_full_path if path else None,
        hostname=rewrite.hostname,
    )


def backend_cluster(
    ref: Any, route_namespace: str, bundle: Bundle, state: MeshState
) -> cfg.WeightedCluster:
    ns = ref.namespace or route_namespace
    svc_name = service_key(ns, ref.name)
    service = state.get("Service", ns, ref.name)
    bundle.topics.add(f"service:{svc_name}")
    cluster = f"{svc_name}/{ref.subset}" if ref.subset else svc_name
    if service is not None:
        _add_cluster(state, service, ref.subset, bundle)
    return cfg.WeightedCluster(cluster=cluster, port=ref.port, weight=getattr(ref, "weight", 1))


def _add_cluster(state: MeshState, service: Any, subset: str | None, bundle: Bundle) -> None:
    ns, name = service.metadata.namespace, service.metadata.name
    svc_name = service_key(ns, name)
    cluster_name = f"{svc_name}/{subset}" if subset else svc_name
    if f"cluster/{cluster_name}" in bundle.entries:
        return
    policy = state.destination_policy_for(ns, name)
    subset_labels: dict[str, str] = {}
    if subset and policy is not None:
        for s in policy.spec.subsets:
            if s.name == subset:
                subset_labels = dict(s.labels)
    cluster = _cluster(cluster_name, svc_name, subset, policy)
    if service.spec.external:
        # Nothing outside the mesh runs a proxy: never originate mTLS to it.
        cluster = msgspec.structs.replace(cluster, mtls=False)
    bundle.add(f"cluster/{cluster_name}", cluster)

    port_map = {p.port: p.target_port or p.port for p in service.spec.ports}
    if service.spec.external:
        bundle.add(
            f"endpoints/{cluster_name}",
            cfg.EndpointSet(cluster=cluster_name, endpoints=_external_endpoints(service)),
        )
        return
    endpoints = []
    bundle.topics.add(f"policy:{ns}")  # PeerAuthentication decides plaintext_ports
    for wl in state.workloads_of(service):
        if subset is not None and not all(
            wl.metadata.labels.get(k) == v for k, v in subset_labels.items()
        ):
            continue
        registered = REGISTERED_BY in wl.metadata.annotations
        peer_auth = _peer_authentication(state, wl.metadata.namespace, wl.metadata.labels)
        disabled = [
            p for p in port_map if peer_auth.get(p, peer_auth.get(0, "PERMISSIVE")) == "DISABLE"
        ]
        # A workload its proxy registered has that proxy in front: it speaks mTLS.
        endpoints.append(
            _workload_endpoint(
                wl,
                {str(p): t for p, t in port_map.items()},
                registered,
                plaintext_ports=disabled if registered else [],
            )
        )
    endpoints.sort(key=lambda e: e.workload)
    bundle.add(
        f"endpoints/{cluster_name}", cfg.EndpointSet(cluster=cluster_name, endpoints=endpoints)
    )


REGISTERED_BY = "mycelium.io/registered-by"


def _workload_endpoint(
    wl: Any, ports: dict[str, int], mtls: bool, *, plaintext_ports: list[int] | None = None
) -> cfg.Endpoint:
    return cfg.Endpoint(
        workload=f"{wl.metadata.namespace}/{wl.metadata.name}",
        address=str(wl.spec.address),
        ports=ports,
        labels=dict(wl.metadata.labels),
        identity=spiffe_id(wl.metadata.namespace, wl.spec.service_account),
        weight=wl.spec.weight,
        healthy=wl.spec.healthy,
        mtls=mtls,
        plaintext_ports=plaintext_ports or [],
    )


def _external_endpoints(service: Any) -> list[cfg.Endpoint]:
    """An external Service's endpoints: plaintext, no identity to check."""
    ns, name = service.metadata.namespace, service.metadata.name
    endpoints = []
    for endpoint in service.spec.endpoints:
        ports = {
            str(p.port): endpoint.ports.get(p.name, p.target_port or p.port)
            for p in service.spec.ports
        }
        endpoints.append(
            cfg.Endpoint(
                workload=f"{ns}/{name}@{endpoint.address}",
                address=str(endpoint.address),
                ports=ports,
                identity="",
                mtls=False,
            )
        )
    return endpoints


def _cluster(cluster_name: str, svc_name: str, subset: str | None, policy: Any) -> cfg.Cluster:
    if policy is None:
        return cfg.Cluster(name=cluster_name, service=svc_name, subset=subset)
    spec = policy.spec
    lb = spec.load_balancer
    pool = spec.connection_pool
    outlier = spec.outlier_detection
    budget = spec.retry_budget
    return cfg.Cluster(
        name=cluster_name,
        service=svc_name,
        subset=subset,
        balancer=lb.type if lb else "P2C_EWMA",
        consistent_hash=(
            cfg.ConsistentHash(
                header=lb.consistent_hash.header,
                cookie=lb.consistent_hash.cookie,
                source_ip=bool(lb.consistent_hash.source_ip),
            )
            if lb and lb.consistent_hash
            else None
        ),
        connection_pool=(
            cfg.ConnectionPool(
                max_connections=pool.max_connections,
                max_pending_requests=pool.max_pending_requests,
                max_requests_in_flight=pool.max_requests_in_flight,
                **_present(connect_timeout=pool.connect_timeout, idle_timeout=pool.idle_timeout),
            )
            if pool
            else cfg.ConnectionPool()
        ),
        outlier_detection=(
            cfg.OutlierDetection(
                consecutive_5xx=outlier.consecutive_5xx_errors,
                consecutive_gateway_errors=outlier.consecutive_gateway_errors,
                interval=outlier.interval,
                base_ejection_time=outlier.base_ejection_time,
                max_ejection_percent=outlier.max_ejection_percent,
            )
            if outlier
            else None
        ),
        retry_budget=(
            cfg.RetryBudget(
                ratio=budget.ratio,
                min_retries_per_second=budget.min_retries_per_second,
                ttl=budget.ttl,
            )
            if budget
            else cfg.RetryBudget()
        ),
    )


def _present(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# --- inbound: the proxy's own workload -------------------------------------------------------


def compile_inbound(
    state: MeshState, node: NodeInfo, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> Bundle:
    bundle = Bundle()
    ns = node.namespace
    workload = node.workload or node.id
    bundle.topics.update({f"policy:{ns}", f"workload:{ns}/{workload}"})
    ports: list[cfg.InboundPort] = []
    peer_auth = _peer_authentication(state, ns, node.labels)
    egress = namespace_egress(state, ns)  # its egress policy; topic policy:<ns>
    for service in state.services_selecting(ns, node.labels):
        svc_name = service_key(ns, service.metadata.name)
        bundle.topics.add(f"service:{svc_name}")
        for p in service.spec.ports:
            mode = peer_auth.get(p.port, peer_auth.get(0, "PERMISSIVE"))
            ports.append(
                cfg.InboundPort(
                    port=p.port,
                    target_port=p.target_port or p.port,
                    service=svc_name,
                    protocol=p.protocol,
                    opaque=p.opaque,
                    mtls=mode,
                )
            )
    ports.sort(key=lambda p: (p.port, p.service))
    bundle.add(
        "inbound",
        cfg.InboundConfig(
            workload=f"{ns}/{workload}",
            namespace=ns,
            identity=spiffe_id(ns, node.service_account, trust_domain),
            ports=ports,
            authorization=_authorization(state, ns, node.labels),
            rate_limits=_rate_limits(state, ns, node.labels),
            egress_policy=egress.policy,
        ),
    )
    return bundle


def _selects(selector: Any, labels: dict[str, str]) -> bool:
    """A policy without a selector applies to the whole namespace."""
    if selector is None or not selector.match_labels:
        return True
    return labels_match(selector.match_labels, labels)


def _peer_authentication(
    state: MeshState, ns: str, labels: dict[str, str]
) -> dict[int, cfg.MtlsMode]:
    """Port -> mTLS mode, port 0 meaning every port. The most specific policy wins:
    workload-selecting over namespace-wide; then port-level over the policy's default."""
    namespace_wide: dict[int, cfg.MtlsMode] = {}
    workload_specific: dict[int, cfg.MtlsMode] = {}
    for pa in sorted(state.of_kind("PeerAuthentication", ns), key=lambda r: r.metadata.name):
        selector = pa.spec.selector
        target = (
            workload_specific if selector is not None and selector.match_labels else namespace_wide
        )
        if not _selects(selector, labels):
            continue
        if pa.spec.mtls is not None:
            target.setdefault(0, pa.spec.mtls.mode)
        for port, setting in (pa.spec.port_level_mtls or {}).items():
            target.setdefault(int(port), setting.mode)
    merged = dict(namespace_wide)
    merged.update(workload_specific)
    return merged


def _authorization(state: MeshState, ns: str, labels: dict[str, str]) -> list[cfg.AuthzPolicy]:
    policies = []
    for ap in sorted(state.of_kind("AuthorizationPolicy", ns), key=lambda r: r.metadata.name):
        if not _selects(ap.spec.selector, labels):
            continue
        rules = []
        for rule in ap.spec.rules:
            rules.append(
                cfg.AuthzRule(
                    sources=[cfg.SourceMatch(**_plain(s.source)) for s in (rule.from_ or [])],
                    operations=[cfg.OperationMatch(**_plain(o.operation)) for o in (rule.to or [])],
                    conditions=[cfg.ConditionMatch(**_plain(w)) for w in (rule.when or [])],
                )
            )
        policies.append(
            cfg.AuthzPolicy(name=f"{ns}/{ap.metadata.name}", action=ap.spec.action, rules=rules)
        )
    return policies


def _plain(model: Any) -> dict[str, Any]:
    """An API model's fields as JSON-ready values, keyed by their Python names."""
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


def _rate_limits(state: MeshState, ns: str, labels: dict[str, str]) -> list[cfg.RateLimit]:
    """The buckets this workload enforces on what it serves.

    A policy on a Service counts every request to the Service's ports. A policy on an
    HTTPRoute counts the requests its rules match: with scope "workload" in one bucket,
    with scope "route" in one bucket per rule.
    """
    selected = {s.metadata.name: s for s in state.services_selecting(ns, labels)}
    limits = []
    for rl in sorted(state.of_kind("RateLimitPolicy", ns), key=lambda r: r.metadata.name):
        target, limit = rl.spec.target_ref, rl.spec.limit
        common = {
            "scope": rl.spec.scope,
            "target": f"{target.kind}/{ns}/{target.name}",
            "requests": limit.requests,
            "per_seconds": limit.per,
            "burst": limit.burst if limit.burst is not None else limit.requests,
        }
        name = f"{ns}/{rl.metadata.name}"
        if target.kind == "Service":
            service = selected.get(target.name)
            if service is not None:
                ports = [p.port for p in service.spec.ports]
                limits.append(cfg.RateLimit(name=name, ports=ports, **common))
            continue
        route = state.get("HTTPRoute", ns, target.name)
        if route is None:
            continue
        ports = sorted(
            {
                p.port
                for parent in route.spec.parent_refs
                if parent.kind == "Service" and parent.name in selected
                for p in selected[parent.name].spec.ports
            }
        )
        if not ports:
            continue
        rules = [[_route_match(m) for m in rule.matches] for rule in route.spec.rules]
        if rl.spec.scope == "route":
            for index, matches in enumerate(rules):
                limits.append(
                    cfg.RateLimit(name=f"{name}#{index}", ports=ports, matches=matches, **common)
                )
        else:
            every = [m for matches in rules for m in matches]
            if any(not matches for matches in rules):
                every = []  # a rule without matches takes every request
            limits.append(cfg.RateLimit(name=name, ports=ports, matches=every, **common))
    return limits


# --- whole snapshots and change topics ------------------------------------------------------


def gateway_topic(namespace: str) -> str:
    """The topic of the Gateways in `namespace` and the routes attached to them."""
    return f"gateways:{namespace}"


def compile_snapshot(
    state: MeshState,
    node: NodeInfo,
    subscriptions: list[str] | set[str],
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> dict[str, CompiledEntry]:
    """The complete config of one proxy (the discovery server caches the pieces)."""
    # Imported here: the gateway compiler builds on this module's pieces.
    from mycelium.control.gateway_compiler import compile_gateway  # noqa: PLC0415

    entries = dict(compile_inbound(state, node, trust_domain).entries)
    if node.role == "gateway":
        entries.update(compile_gateway(state, node).entries)
    for reference in sorted(subscriptions):
        entries.update(compile_service(state, reference, node.namespace).entries)
    return entries


def topics_of_change(state: MeshState, old: Any | None, new: Any | None) -> set[str]:
    """Which compiled pieces a change from `old` to `new` (either may be None) can affect."""
    topics: set[str] = set()
    for resource in (old, new):
        if resource is None:
            continue
        kind, ns, name = resource.kind, resource.metadata.namespace, resource.metadata.name
        if kind == "Service":
            topics.update({"services", f"service:{service_key(ns, name)}", f"policy:{ns}"})
        elif kind == "Workload":
            topics.add(f"workload:{ns}/{name}")
            for svc in state.services_selecting(ns, resource.metadata.labels):
                topics.add(f"service:{service_key(ns, svc.metadata.name)}")
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
                    topics.add(f"service:{service_key(parent_ns, parent.name)}")
            if kind == "HTTPRoute" and any(
                rl.spec.target_ref.kind == "HTTPRoute" and rl.spec.target_ref.name == name
                for rl in state.of_kind("RateLimitPolicy", ns)
            ):
                topics.add(f"policy:{ns}")  # the serving side counts this route's requests
        elif kind == "DestinationPolicy":
            host = resource.spec.host.split(".")
            host_ns = host[1] if len(host) > 1 else ns
            topics.add(f"service:{service_key(host_ns, host[0])}")
        elif kind in ("PeerAuthentication", "AuthorizationPolicy", "RateLimitPolicy"):
            topics.add(f"policy:{ns}")
        elif kind == "Namespace":
            topics.add(f"policy:{name}")
    return topics
