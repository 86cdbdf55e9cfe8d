"""A proxy core wired to in-memory transports: one route, one client connection and one
idle upstream connection, driven by calling the protocols' callbacks directly.

For unit tests of the exchange path and for `bench/proxy_path.py`, which times the
Python a proxied request costs without any socket in the way. (The transports are
fakes on purpose: what is measured or checked is the proxy's own code.)
"""

from __future__ import annotations

import random
from pathlib import Path

from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.active_config import ActiveConfig
from mycelium.proxy.core import ProxyCore
from mycelium.proxy.filters.chain import build_chain
from mycelium.proxy.http1.downstream import DownstreamHttp1
from mycelium.proxy.router.roles import Role, SidecarOutbound
from mycelium.proxy.routing import compile_route
from mycelium.proxy.settings import ProxySettings
from mycelium.proxy.upstream.http1_pool import UpstreamHttp1


class MemoryTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Wired:
    """A proxy core with one route, a client connection, and one idle upstream one."""

    def __init__(self, rule: cfg.HttpRule | None = None, role: Role | None = None) -> None:
        settings = ProxySettings(
            node=NodeInfo(id="unit"),
            controllers=[],
            trust_bundle=Path("/nonexistent"),
            outbound=None,
            admin=None,
            health=None,
            metrics=None,
        )
        self.core = core = ProxyCore(settings, rng=random.Random(7))
        rule = rule or cfg.HttpRule(
            name="default/backend#0",
            backends=[cfg.WeightedCluster(cluster="backend.default", weight=1)],
        )
        route = cfg.ServiceRoute(
            service="backend.default",
            hosts=["backend"],
            ports=[cfg.ServicePort(name="http", port=80, protocol="HTTP")],
            http_rules=[rule],
            tcp_backends=[],
        )
        compiled = compile_route(route)
        for compiled_rule in compiled.rules:
            compiled_rule.state = build_chain(compiled_rule.rule, core.rng)
        endpoint = cfg.Endpoint(
            workload="default/b", address="127.0.0.1", ports={"80": 8080}, identity=""
        )
        core.active = ActiveConfig(
            version="1",
            routes={"backend.default": compiled},
            hosts={"backend": "backend.default"},
            clusters={
                "backend.default": cfg.Cluster(
                    name="backend.default", service="backend.default", mtls=False
                )
            },
            endpoints={
                "backend.default": cfg.EndpointSet(cluster="backend.default", endpoints=[endpoint])
            },
        )
        core.clusters.sync(core.active.clusters, core.active.endpoints)
        self.client = MemoryTransport()
        self.downstream = DownstreamHttp1(core, role or SidecarOutbound())
        self.downstream.connection_made(self.client)  # type: ignore[arg-type]
        pool = core.pools.get("127.0.0.1", 8080)
        self.server = MemoryTransport()
        self.upstream = UpstreamHttp1(pool)
        self.upstream.connection_made(self.server)  # type: ignore[arg-type]
        pool.release(self.upstream)
