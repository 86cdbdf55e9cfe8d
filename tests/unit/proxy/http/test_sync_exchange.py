"""The synchronous exchange path, driven with in-memory transports: what it writes
upstream and downstream, and the default timeout that the core's sweep enforces."""

from __future__ import annotations

import random
import time
from pathlib import Path

from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.active_config import ActiveConfig
from mycelium.proxy.core import ProxyCore
from mycelium.proxy.filters.chain import build_chain
from mycelium.proxy.http.downstream import DownstreamHttp1
from mycelium.proxy.http.exchange import DEFAULT_TIMEOUT_SECONDS, Listener
from mycelium.proxy.http.upstream import UpstreamHttp1
from mycelium.proxy.routing import compile_route
from mycelium.proxy.settings import ProxySettings

RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: keep-alive\r\n\r\n"
)


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

    def __init__(self, rule: cfg.HttpRule | None = None, listener: Listener | None = None) -> None:
        settings = ProxySettings(
            node=NodeInfo(id="unit"),
            controllers=[],
            trust_bundle=Path("/nonexistent"),
            outbound=None,
            admin=None,
            health=None,
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
        self.downstream = DownstreamHttp1(core, listener or Listener("outbound"))
        self.downstream.connection_made(self.client)  # type: ignore[arg-type]
        pool = core.pools.get("127.0.0.1", 8080)
        self.server = MemoryTransport()
        self.upstream = UpstreamHttp1(pool)
        self.upstream.connection_made(self.server)  # type: ignore[arg-type]
        pool.release(self.upstream)


async def test_a_plain_exchange_forwards_both_heads_byte_for_byte() -> None:
    wired = Wired()
    request = b"GET /a?b=1 HTTP/1.1\r\nHost: backend\r\nUser-Agent: T/1\r\n\r\n"

    wired.downstream.data_received(request)
    assert wired.server.written == [request]
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")

    assert wired.client.written == [RESPONSE_HEAD + b"hello world\n"]  # one write
    assert wired.core.counters["requests_sync"] == 1
    assert wired.core.counters["requests"] == 1


async def test_hop_by_hop_fields_make_the_proxy_write_the_heads_itself() -> None:
    wired = Wired()

    wired.downstream.data_received(
        b"GET / HTTP/1.1\r\nHost: backend\r\nTE: trailers\r\nConnection: TE\r\n\r\n"
    )
    (sent,) = wired.server.written
    assert b"te:" not in sent.lower()
    assert b"connection" not in sent.lower()
    wired.upstream.data_received(
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
    )

    (answer,) = wired.client.written
    assert b"keep-alive" not in answer.lower()
    assert answer.endswith(b"content-length: 2\r\n\r\nok")


async def test_a_client_that_closes_gets_connection_close_not_the_raw_head() -> None:
    wired = Wired()

    wired.downstream.data_received(b"GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n")
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")

    (answer,) = wired.client.written
    assert b"connection: close\r\n" in answer
    assert b"Connection: keep-alive" not in answer
    assert wired.client.closed


async def test_a_response_head_overdue_past_the_default_timeout_is_a_504() -> None:
    wired = Wired()
    wired.downstream.data_received(b"GET /slow HTTP/1.1\r\nHost: backend\r\n\r\n")

    wired.downstream.check_timeouts(time.monotonic() + 1)
    assert wired.client.written == []  # not yet

    wired.downstream.check_timeouts(time.monotonic() + DEFAULT_TIMEOUT_SECONDS + 1)

    (answer,) = wired.client.written
    assert answer.startswith(b"HTTP/1.1 504 ")
    assert b"x-mycelium-reason: upstream_timeout" in answer
    assert wired.server.aborted  # that connection's late answer must not be taken
    assert wired.core.counters["reason_upstream_timeout"] == 1
    cluster = next(iter(wired.core.clusters))
    assert cluster.breaker.requests == 0
    assert cluster.endpoints[0].in_flight == 0


async def test_a_response_before_the_deadline_disarms_the_sweep() -> None:
    wired = Wired()
    wired.downstream.data_received(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")

    wired.downstream.check_timeouts(time.monotonic() + DEFAULT_TIMEOUT_SECONDS + 1)

    assert len(wired.client.written) == 1
    assert wired.core.counters["reason_upstream_timeout"] == 0


async def test_a_client_gone_while_its_request_waits_still_gets_timed_out() -> None:
    wired = Wired()
    wired.downstream.data_received(b"GET /slow HTTP/1.1\r\nHost: backend\r\n\r\n")

    wired.downstream.connection_lost(None)
    assert wired.downstream in wired.core.connections  # the sweep still watches it
    for connection in list(wired.core.connections):
        connection.check_timeouts(time.monotonic() + DEFAULT_TIMEOUT_SECONDS + 1)

    assert wired.server.aborted
    assert wired.downstream not in wired.core.connections
    cluster = next(iter(wired.core.clusters))
    assert cluster.breaker.requests == 0
    assert cluster.endpoints[0].in_flight == 0


async def test_an_inbound_request_goes_at_once_with_the_hop_recorded() -> None:
    wired = Wired(listener=Listener("inbound", port=8080))

    wired.downstream.data_received(b"GET /in HTTP/1.1\r\nHost: backend\r\n\r\n")

    (sent,) = wired.server.written
    assert sent.startswith(b"GET /in HTTP/1.1\r\n")
    assert b"x-forwarded-for: 127.0.0.1\r\n" in sent
    assert b"forwarded: for=127.0.0.1;proto=http;host=backend\r\n" in sent
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")
    assert wired.client.written == [RESPONSE_HEAD + b"hello world\n"]
    assert wired.core.counters["requests_sync"] == 1
