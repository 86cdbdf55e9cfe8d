"""What a connection becomes, decided from config alone: relay, HTTP, or passthrough."""

from __future__ import annotations

from collections import Counter

from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.active_config import ActiveConfig
from mycelium.proxy.core import ProxyCore
from mycelium.proxy.filters.authorization import Authorizer
from mycelium.proxy.listeners.tcp_routing import (
    Refuse,
    RelayTo,
    ServeHttp,
    decide_inbound,
    decide_outbound,
    is_opaque,
    passthrough,
    pick_weighted,
    service_port,
)
from mycelium.proxy.routing import compile_route
from mycelium.proxy.settings import ProxySettings


def _route(*backends: tuple[str, int], opaque: bool = False) -> cfg.ServiceRoute:
    return cfg.ServiceRoute(
        service="db.default",
        hosts=["db", "db.default"],
        vip="10.0.0.5",
        ports=[
            cfg.ServicePort(name="sql", port=3306, protocol="TCP", opaque=opaque),
            cfg.ServicePort(name="http", port=8080, protocol="HTTP"),
        ],
        http_rules=[
            cfg.HttpRule(
                name="default", backends=[cfg.WeightedCluster(cluster="db.default", weight=1)]
            )
        ],
        tcp_backends=[cfg.WeightedCluster(cluster=c, weight=w) for c, w in backends],
    )


def _core() -> ProxyCore:
    node = NodeInfo(id="t", namespace="default", service_account="default")
    return ProxyCore(ProxySettings(node=node, controllers=[], trust_bundle=None))


def _config(route: cfg.ServiceRoute) -> ActiveConfig:
    active = ActiveConfig(version="1")
    active.routes[route.service] = compile_route(route)
    active.hosts[route.vip or ""] = route.service
    for name in {b.cluster for b in route.tcp_backends}:
        active.clusters[name] = cfg.Cluster(
            name=name, service=name, balancer="ROUND_ROBIN", mtls=False
        )
        active.endpoints[name] = cfg.EndpointSet(
            cluster=name,
            endpoints=[
                cfg.Endpoint(
                    workload=name,
                    address=f"198.18.0.{len(name)}",
                    ports={"3306": 13306},
                    identity="",
                )
            ],
        )
    return active


def test_tcp_tls_and_opaque_ports_are_bytes_only() -> None:
    assert is_opaque("TCP", False)
    assert is_opaque("TLS", False)
    assert is_opaque("HTTP", True)
    assert not is_opaque("HTTP", False)
    assert not is_opaque("GRPC", False)


def test_a_service_port_is_found_by_number_or_is_the_first() -> None:
    route = _route(("db.default", 1))
    assert service_port(route, 8080) is route.ports[1]
    assert service_port(route, None) is route.ports[0]
    assert service_port(route, 9999) is None


def test_tcp_backends_share_connections_by_weight() -> None:
    route = _route(("a.default", 3), ("b.default", 1))
    picks = Counter(pick_weighted(route.tcp_backends, i / 100).cluster for i in range(100))  # type: ignore[union-attr]
    assert picks == {"a.default": 75, "b.default": 25}
    assert pick_weighted(_route(("a.default", 0)).tcp_backends, 0.5) is None


def test_an_outbound_vip_on_a_tcp_port_relays_to_an_endpoint_of_the_cluster() -> None:
    config = _config(_route(("db.default", 1)))
    decision = decide_outbound(_core(), config, "10.0.0.5", 3306)
    assert isinstance(decision, RelayTo)
    assert (decision.host, decision.port) == ("198.18.0.10", 13306)
    assert decision.cluster  # not a passthrough


def test_an_outbound_vip_on_an_http_port_goes_to_http_with_its_service() -> None:
    decision = decide_outbound(_core(), _config(_route(("db.default", 1))), "10.0.0.5", 8080)
    assert isinstance(decision, ServeHttp)
    assert (decision.role.reference, decision.role.port) == ("db.default", 8080)


def test_an_unknown_address_or_port_is_left_undecided_for_passthrough() -> None:
    config = _config(_route(("db.default", 1)))
    assert decide_outbound(_core(), config, "10.9.9.9", 3306) is None
    assert decide_outbound(_core(), config, "10.0.0.5", 9999) is None


def test_inbound_ports_relay_or_serve_http_and_others_reach_the_app_as_they_are() -> None:
    core = _core()
    config = ActiveConfig(version="1")
    config.inbound_ports = {
        3306: cfg.InboundPort(port=3306, target_port=13306, service="db.default", protocol="TCP"),
        8080: cfg.InboundPort(port=8080, target_port=18080, service="db.default", protocol="HTTP"),
    }
    relayed = decide_inbound(core, config, 3306, "198.18.0.9")
    assert relayed == RelayTo("127.0.0.1", 13306, "inbound|13306", service="db.default")
    http = decide_inbound(core, config, 8080, "198.18.0.9")
    assert isinstance(http, ServeHttp)
    assert http.role.side.direction == "inbound"
    assert decide_inbound(core, config, 22, "198.18.0.9") == RelayTo("127.0.0.1", 22)


def test_an_opaque_inbound_port_is_refused_when_policy_denies_the_peer() -> None:
    core = _core()
    config = ActiveConfig(version="1")
    config.inbound_ports = {
        3306: cfg.InboundPort(port=3306, target_port=13306, service="db.default", protocol="TCP"),
    }
    only_office = cfg.AuthzRule(sources=[cfg.SourceMatch(ip_blocks=["198.18.1.0/24"])])
    config.authorizer = Authorizer(
        [cfg.AuthzPolicy(name="default/db-office", action="ALLOW", rules=[only_office])]
    )

    refused = decide_inbound(core, config, 3306, "198.18.0.9")
    assert isinstance(refused, Refuse)
    assert refused.counter == "denied"
    assert "198.18.0.9 may not reach port 3306" in refused.reason
    assert core.counters["authz_denied"] == 1
    allowed = decide_inbound(core, config, 3306, "198.18.1.7")
    assert allowed == RelayTo("127.0.0.1", 13306, "inbound|13306", service="db.default")


def _inbound(policy: str) -> cfg.InboundConfig:
    return cfg.InboundConfig(
        workload="shop/cart-0",
        namespace="shop",
        identity="spiffe://cluster.local/ns/shop/sa/cart",
        ports=[],
        egress_policy=policy,  # type: ignore[arg-type]
    )


def test_an_unknown_destination_is_relayed_as_addressed_unless_registry_only() -> None:
    config = ActiveConfig(version="1", inbound=_inbound("ALLOW_ANY"))
    assert passthrough(config, "203.0.113.7", 443) == RelayTo("203.0.113.7", 443)
    assert passthrough(ActiveConfig(version="1"), "203.0.113.7", 443) == RelayTo("203.0.113.7", 443)
    refused = passthrough(
        ActiveConfig(version="1", inbound=_inbound("REGISTRY_ONLY")), "203.0.113.7", 443
    )
    assert isinstance(refused, Refuse)
    assert refused.counter == "egress_denied"
    assert "203.0.113.7:443 is not a Service in the registry" in refused.reason
    assert "namespace shop has egress policy REGISTRY_ONLY" in refused.reason
