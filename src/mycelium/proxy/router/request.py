"""A request on its way through the router, whichever protocol carries it.

`ProxiedRequest` is the state both protocol shells share: what filters see and change
(`filters.base.FilteredRequest`), what the listener's role fills in (the plan: cluster,
rule, filter chain), and what becomes the `FinishedRequest` telemetry receives when the
request ends. The HTTP/1.1 exchange and the HTTP/2 stream subclass it and add how their
bytes move.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal, Protocol

from mycelium.telemetry import FinishedRequest

if TYPE_CHECKING:
    from mycelium.proxy.filters.base import Headers
    from mycelium.proxy.filters.chain import RuleChain
    from mycelium.proxy.router.engine import Engine
    from mycelium.proxy.routing import CompiledRule, RequestFacts
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.telemetry import TrafficSide
    from mycelium.telemetry.tracing import Span

NO_MESSAGES = (0, 0)


class Client(Protocol):
    """The client's connection, as far as a request's telemetry and policy read it."""

    @property
    def peer_host(self) -> str: ...

    @property
    def peer_principal(self) -> str | None: ...  # its SPIFFE ID when it came over mTLS

    @property
    def peer_metadata(self) -> bytes | None: ...  # the calling proxy's introduction


class Planner(Protocol):
    """The listener's role, as its requests hold it (`router.roles.Role`)."""

    @property
    def side(self) -> TrafficSide: ...

    @property
    def port(self) -> int | None: ...

    def plan_now(self, request: ProxiedRequest, engine: Engine) -> bool: ...

    async def plan(self, request: ProxiedRequest, engine: Engine) -> None: ...


class ProxiedRequest:
    __slots__ = (
        "bytes_sent",
        "chain",
        "cluster",
        "cluster_name",
        "downstream",
        "facts",
        "headers",
        "host",
        "host_value",
        "method",
        "port",
        "proxy",
        "reason",
        "response_head_at",
        "response_started",
        "role",
        "rule",
        "rule_name",
        "service",
        "span",
        "started",
        "status",
        "target",
        "upstream_host",
    )
    protocol = ""  # "HTTP/1.1" or "HTTP/2"
    grpc = False
    grpc_status = ""

    def __init__(  # noqa: PLR0917 - positional on purpose: once per request, hot
        self,
        proxy: Engine,
        downstream: Client,
        role: Planner,
        method: bytes,
        target: bytes,
        headers: Headers,
        host_value: bytes,
    ) -> None:
        self.proxy = proxy
        self.downstream = downstream
        self.role = role
        # What the filters see and may change; `host_value` is the Host header or the
        # :authority as the client sent it.
        self.method = method
        self.target = target
        self.headers = headers
        self.host_value = host_value
        self.host = ""  # as routed (`request_facts`; a rewrite may change it)
        self.facts: RequestFacts | None = None
        # what routing found
        self.service = ""
        self.port = role.port
        self.rule_name = ""
        self.cluster_name = ""
        self.upstream_host = ""
        # how it ended
        self.status = 0
        self.reason = ""
        self.bytes_sent = 0
        self.started = time.monotonic()
        # tracing: None until decided where the upstream request is built (`trace`)
        self.span: Span | Literal[False] | None = None
        self.response_head_at = 0.0  # when the upstream's response head came (0: none)
        self.response_started = False
        # the plan (the role fills it in)
        self.cluster: ClusterRuntime | None = None
        self.rule: CompiledRule | None = None
        self.chain: RuleChain | None = None

    @property
    def bytes_received(self) -> int:
        """Request body bytes from the client."""
        raise NotImplementedError

    @property
    def side(self) -> TrafficSide:
        """Which side of the call the listener's role says this request is."""
        return self.role.side

    @property
    def peer_host(self) -> str:
        return self.downstream.peer_host

    @property
    def peer_principal(self) -> str | None:
        return self.downstream.peer_principal

    # --- what the role asks of the request ------------------------------------------------

    def request_facts(self) -> RequestFacts:
        """The request as route matching sees it (sets `facts` and `host`)."""
        raise NotImplementedError

    def mirror(self, cluster: ClusterRuntime) -> None:
        """Send a copy of the request to `cluster` (a rule's mirror's), and forget it."""
        raise NotImplementedError

    def trace(self) -> None:
        """Where the upstream request is about to be built: continue or start the trace
        (the tracer rewrites the trace headers of a sampled request)."""
        tracer = self.proxy.tracer
        if tracer is not None:
            tracer.begin(self)

    # --- its end -------------------------------------------------------------------------

    def grpc_messages(self) -> tuple[int, int]:
        """gRPC messages (request, response) forwarded: a protocol that counts them
        says so; a gRPC request it carries otherwise counts none."""
        return NO_MESSAGES

    def report(self, received: int, ended: float) -> None:
        """The request ended at `ended` (a time.monotonic()): count it, and hand its
        frozen record to every observer. `received` is the request body's bytes, which
        each protocol counts its own way. Once per request on the hot path, so the count
        is kept here, not in a call more."""
        downstream = self.downstream
        record = FinishedRequest(
            self.role.side,
            self.protocol,
            self.method,
            self.target,
            self.host,
            self.service,
            self.rule_name,
            self.status,
            self.reason,
            self.cluster_name,
            self.upstream_host,
            received,
            self.bytes_sent,
            self.started,
            self.response_head_at,
            ended,
            self.grpc,
            self.grpc_status,
            downstream.peer_host,
            downstream.peer_principal,
            downstream.peer_metadata,
            self.headers,
            self.span,
            self.grpc_messages() if self.grpc else NO_MESSAGES,
        )
        proxy = self.proxy
        proxy.requests += 1
        if record.reason:
            proxy.counters[f"reason_{record.reason}"] += 1
        for observer in proxy.request_observers:
            observer.request_finished(record)
