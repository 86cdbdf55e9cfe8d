"""Listener roles plan a request: where it goes, which checks apply, which side it is.

The proxy core and its config are real (one route to `backend`, as `Wired` builds
them); the request is the router's own `ProxiedRequest`, without a protocol under it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from tests.support.wired_proxy import Wired

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import EgressDenied, UnknownService
from mycelium.proxy.router.request import ProxiedRequest
from mycelium.proxy.router.roles import Role, SidecarInbound, SidecarOutbound
from mycelium.proxy.routing import RequestFacts
from mycelium.telemetry import INBOUND, LOCAL, OUTBOUND


@dataclass
class Client:
    peer_host: str = "198.18.0.7"
    peer_principal: str | None = None
    peer_metadata: bytes | None = None


class BareRequest(ProxiedRequest):
    """A request as the router sees it, with no protocol's bytes behind it."""

    __slots__ = ()
    protocol = "test"

    def request_facts(self) -> RequestFacts:
        self.host = self.host_value.decode()
        self.facts = RequestFacts.from_fields(
            self.method.decode(), self.target.decode(), self.headers
        )
        return self.facts


def request(wired: Wired, role: Role, host: bytes = b"backend") -> BareRequest:
    return BareRequest(wired.core, Client(), role, b"GET", b"/books", [(b"host", host)], host)


def test_an_outbound_call_is_planned_to_the_service_its_host_names() -> None:
    wired = Wired()
    call = request(wired, SidecarOutbound())
    assert SidecarOutbound().plan_now(call, wired.core)
    assert (call.service, call.port) == ("backend.default", 80)
    assert call.cluster_name == "backend.default"
    assert call.rule is not None
    assert call.rule.rule.name == call.rule_name
    assert call.side is OUTBOUND


def test_an_unknown_host_is_left_to_the_asynchronous_plan() -> None:
    wired = Wired()
    call = request(wired, SidecarOutbound(), host=b"ratings")
    assert not SidecarOutbound().plan_now(call, wired.core)
    assert call.cluster is None  # nothing was half planned


async def test_a_name_no_config_knows_is_an_unknown_service_or_denied_egress() -> None:
    wired = Wired()
    with pytest.raises(UnknownService, match="'ratings'"):
        await SidecarOutbound().plan(request(wired, SidecarOutbound(), b"ratings"), wired.core)

    inbound = cfg.InboundConfig(
        workload="shop/cart", namespace="shop", identity="", ports=[],
        egress_policy="REGISTRY_ONLY",
    )  # fmt: skip
    wired.core.active = replace(wired.core.active, inbound=inbound)
    with pytest.raises(EgressDenied, match="namespace shop has egress policy REGISTRY_ONLY"):
        await SidecarOutbound().plan(request(wired, SidecarOutbound(), b"ratings"), wired.core)


def test_a_local_listener_serves_its_one_service_whatever_the_host_says() -> None:
    wired = Wired()
    role = SidecarOutbound(reference="backend", port=80, local=True)
    call = request(wired, role, host=b"localhost:15001")
    assert role.plan_now(call, wired.core)
    assert call.service == "backend.default"
    assert call.side is LOCAL


def test_an_inbound_call_goes_to_the_local_app_with_forwarding_fields() -> None:
    wired = Wired()
    role = SidecarInbound(8080)
    call = request(wired, role)
    assert role.plan_now(call, wired.core)
    assert call.cluster_name == "inbound|8080"
    assert call.rule is None
    assert (b"x-forwarded-for", b"198.18.0.7") in call.headers
    assert call.side is INBOUND
    assert role.mesh_tls  # peers are other proxies: TLS is detected and ended here
    assert not SidecarOutbound().mesh_tls
