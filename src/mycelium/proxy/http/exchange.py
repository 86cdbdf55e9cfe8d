"""One request/response exchange: the router of the proxy.

Outbound (a local app calling a service): find the service from the Host header, the
absolute-form target, or the listener; match a rule; run its request filters; pick a
backend by weight; then attempt, and retry when the rule allows and it is safe and the
cluster's retry budget agrees. Inbound (a peer calling the local app): enforce the
serving side's rate limits, add forwarding headers, and hand the request to the app.

The response head decides; its body is then streamed by the connections themselves
(upstream → downstream) under their flow control, without passing through here.
Retry *policy* (what may be retried) is `retry_allowed`; the *mechanism* is the loop in
`_forward`.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Literal

from mycelium.discovery import config as cfg
from mycelium.proxy.errors import (
    CircuitOpen,
    NoHealthyUpstream,
    NoRoute,
    ProxyError,
    RetryBudgetExhausted,
    UnknownService,
    UpstreamConnectFailed,
    UpstreamReset,
    UpstreamTimeout,
)
from mycelium.proxy.filters.chain import RuleChain
from mycelium.proxy.http.body import BodyStream
from mycelium.proxy.protocols.headers import add_forwarding, strip_hop_by_hop
from mycelium.proxy.protocols.http1 import (
    RequestReceived,
    ResponseReceived,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
)
from mycelium.proxy.routing import CompiledRule, RequestFacts

if TYPE_CHECKING:
    from mycelium.proxy.core import ProxyCore
    from mycelium.proxy.http.downstream import DownstreamHttp1
    from mycelium.proxy.http.upstream import UpstreamHttp1
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState

# When a rule sets no timeout, a response head must still arrive within this (Envoy's
# default route timeout is 15 s too).
DEFAULT_TIMEOUT_SECONDS = 15.0
# Between retries: 25 ms doubling, with jitter (Envoy's default base interval).
RETRY_BACKOFF_BASE_SECONDS = 0.025
RETRY_BACKOFF_MAX_SECONDS = 0.25
# Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
GATEWAY_ERRORS = frozenset({502, 503, 504})
# Set again by whoever writes a message, from its actual framing.
FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})

type ListenerKind = Literal["outbound", "inbound", "local"]


class Listener:
    """What the accepting listener knows about the requests it receives."""

    __slots__ = ("inbound_port", "kind", "port", "reference")

    def __init__(
        self,
        kind: ListenerKind,
        *,
        reference: str | None = None,
        port: int | None = None,
        inbound_port: cfg.InboundPort | None = None,
    ) -> None:
        self.kind = kind
        self.reference = reference  # a "local" listener serves the one service it names
        self.port = port  # the service port requests are for, when the listener knows it
        self.inbound_port = inbound_port


class Exchange:
    __slots__ = (
        "body",
        "bytes_sent",
        "cluster_name",
        "downstream",
        "facts",
        "head",
        "headers",
        "host",
        "listener",
        "method",
        "port",
        "proxy",
        "reason",
        "response_started",
        "rule_name",
        "service",
        "started",
        "status",
        "target",
        "upstream_host",
    )

    def __init__(
        self,
        proxy: ProxyCore,
        downstream: DownstreamHttp1,
        head: RequestReceived,
        body: BodyStream | None,
        listener: Listener,
    ) -> None:
        self.proxy = proxy
        self.downstream = downstream
        self.head = head
        self.body = body
        self.listener = listener
        self.method = head.method
        self.target = head.target
        self.headers = head.headers
        self.host = ""
        self.facts: RequestFacts | None = None
        self.service = ""
        self.port = listener.port
        self.rule_name = ""
        self.cluster_name = ""
        self.upstream_host = ""
        self.status = 0
        self.reason = ""
        self.bytes_sent = 0
        self.started = time.monotonic()
        self.response_started = False

    # --- entry point -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.listener.kind == "inbound":
                await self._inbound()
            else:
                await self._outbound()
        except ProxyError as exc:
            self.reason = exc.reason
            self.status = exc.status
            if not self.response_started:
                self.downstream.local_reply(self, exc)
            else:
                self.downstream.abort()
        except Exception as exc:  # a bug must cost one request, not the connection's others
            self.reason = "internal_error"
            self.status = 500
            self.proxy.log.exception("request failed inside the proxy: %s", exc)
            if not self.response_started:
                self.downstream.local_reply(self, ProxyError(f"internal error: {exc}"))
            else:
                self.downstream.abort()
        finally:
            self.proxy.exchange_finished(self)

    # --- outbound ----------------------------------------------------------------------------

    def _request_facts(self) -> RequestFacts:
        host = ""
        folded: dict[str, str] = {}
        for name, value in self.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            folded[key] = f"{folded[key]},{text}" if key in folded else text
            if name == b"host":
                host = text
        target = self.target.decode("latin-1")
        if not target.startswith("/"):
            # absolute-form (HTTP_PROXY clients): http://host[:port]/path
            _, sep, rest = target.partition("://")
            if sep:
                authority, slash, path = rest.partition("/")
                host = authority or host
                target = slash + path if slash else "/"
                self.target = target.encode("latin-1")
                self.headers = [(n, v) for n, v in self.headers if n != b"host"]
                self.headers.append((b"host", host.encode("latin-1")))
                folded["host"] = host
        self.host = host
        facts = RequestFacts.from_target(self.method.decode("latin-1"), target, folded)
        self.facts = facts
        return facts

    async def _outbound(self) -> None:
        facts = self._request_facts()
        proxy = self.proxy
        config = proxy.active
        name = self.listener.reference or self.host
        service = config.service_for(name)
        if service is None:
            await proxy.resolve(name)
            config = proxy.active
            service = config.service_for(name)
            if service is None:
                reason = config.unresolved.get(_strip_port(name))
                raise UnknownService(reason or f"no service is known by the name {name!r}")
        self.service = service
        route = config.routes.get(service)
        if route is None:
            raise UnknownService(f"no route for service {service} in config {config.version}")
        if self.port is None:
            # A local listener's own port says nothing about the service's port.
            named = None if self.listener.reference else _port_of(self.host)
            self.port = named or _first_http_port(route.route)
        rule = route.match(facts)
        if rule is None:
            raise NoRoute(f"no rule of service {service} matches {facts.method} {facts.path}")
        self.rule_name = rule.rule.name
        chain: RuleChain = rule.state
        for request_filter in chain.request:
            delay = request_filter.on_request(self)
            if delay:
                await asyncio.sleep(delay)
        backend = rule.pick_backend(proxy.rng.random())
        if backend is None:
            raise NoHealthyUpstream(f"every backend of rule {rule.rule.name} has weight 0")
        port = backend.port or self.port
        cluster = proxy.cluster(config, backend.cluster, port)
        if rule.rule.mirror is not None:
            proxy.mirror(self, config, rule.rule.mirror, port)
        await self._forward(cluster, rule, chain)

    # --- inbound -----------------------------------------------------------------------------

    async def _inbound(self) -> None:
        facts = self._request_facts()
        config = self.proxy.active
        port = self.listener.port or 0
        for limit in config.rate_limits:
            if limit.applies(port):
                limit.on_request(self)
        del facts
        self.headers = add_forwarding(
            self.headers,
            client_address=self.downstream.peer_host,
            proto="http",
            host=self.host.encode("latin-1") if self.host else None,
        )
        inbound = self.listener.inbound_port or config.inbound_ports.get(port)
        target_port = inbound.target_port if inbound is not None else port
        self.service = inbound.service if inbound is not None else ""
        cluster = self.proxy.local_app(target_port)
        await self._forward(cluster, None, None)

    # --- forwarding with retries ----------------------------------------------------------

    async def _forward(
        self, cluster: ClusterRuntime, rule: CompiledRule | None, chain: RuleChain | None
    ) -> None:
        self.cluster_name = cluster.name
        policy = rule.rule.retries if rule is not None else None
        timeout = (rule.rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempts = 1 + (policy.attempts if policy is not None else 0)
        budget = cluster.retry_budget
        now = time.monotonic()
        budget.record_request(now)
        replay = self.body.replay() if self.body is not None else []
        last_error: ProxyError | None = None
        for attempt in range(attempts):
            if attempt > 0:
                if not budget.try_retry(time.monotonic()):
                    assert last_error is not None
                    raise RetryBudgetExhausted(
                        f"retries to {cluster.name} are over budget; last failure: "
                        f"{last_error.reason}: {last_error.detail}"
                    )
                pause = min(
                    RETRY_BACKOFF_MAX_SECONDS,
                    RETRY_BACKOFF_BASE_SECONDS * (2 ** (attempt - 1)),
                ) * self.proxy.rng.uniform(0.5, 1.0)
                if loop.time() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            per_try = policy.per_try_timeout if policy is not None else None
            remaining = deadline - loop.time()
            budget_for_try = min(per_try, remaining) if per_try else remaining
            try:
                conn, endpoint, response = await self._attempt(
                    cluster, replay, budget_for_try, overall=budget_for_try == remaining
                )
            except (UpstreamConnectFailed, UpstreamReset, UpstreamTimeout) as exc:
                last_error = exc
                if attempt + 1 < attempts and retry_allowed(
                    policy, self.method, replay is not None, error=exc
                ):
                    continue
                raise
            if attempt + 1 < attempts and retry_allowed(
                policy, self.method, replay is not None, status=response.status
            ):
                last_error = ProxyError(f"upstream answered {response.status}")
                last_error.reason = f"status_{response.status}"
                cluster.breaker.release_request()
                endpoint.request_finished(time.monotonic(), 0.0, ok=False)
                conn.abort()  # its body is not wanted; a fresh connection is cheaper than draining
                continue
            await self._respond(conn, endpoint, cluster, response, chain)
            return
        assert last_error is not None
        if isinstance(last_error, (UpstreamConnectFailed, UpstreamReset, UpstreamTimeout)):
            raise last_error
        raise UpstreamTimeout(f"no response from {cluster.name} within {_duration(timeout)}")

    async def _attempt(
        self,
        cluster: ClusterRuntime,
        replay: list[bytes] | None,
        timeout: float,
        *,
        overall: bool,
    ) -> tuple[UpstreamHttp1, EndpointState, ResponseReceived]:
        now = time.monotonic()
        endpoint = cluster.pick(now, self._hash_key(cluster))
        if endpoint is None:
            raise NoHealthyUpstream(
                f"cluster {cluster.name} has no healthy endpoint "
                f"({len(cluster.endpoints)} known, the rest ejected or unhealthy)"
            )
        if not cluster.breaker.try_acquire_request():
            raise CircuitOpen(f"cluster {cluster.name} is at its limit of requests in flight")
        self.upstream_host = endpoint.key
        pool = self.proxy.pools.get(endpoint.address, endpoint.port)
        try:
            conn = await pool.acquire(cluster.settings.connection_pool.connect_timeout)
        except UpstreamConnectFailed:
            cluster.breaker.release_request()
            cluster.outlier.record(endpoint, status=None, failure="connect", now=time.monotonic())
            raise
        endpoint.request_started(now)
        head = encode_request_head(self.method, self.target, self._upstream_headers())
        waiter = conn.begin(self.method, head)
        try:
            async with asyncio.timeout(timeout):
                await self._send_body(conn, replay)
                response = await waiter
        except TimeoutError:
            conn.abort()
            self._attempt_failed(cluster, endpoint, "timeout")
            which = "the route's timeout" if overall else "the per-try timeout"
            raise UpstreamTimeout(
                f"{endpoint.key} did not answer within {_duration(timeout)} ({which})"
            ) from None
        except UpstreamReset:
            self._attempt_failed(cluster, endpoint, "reset")
            raise
        except ProxyError:
            self._attempt_failed(cluster, endpoint, "reset")
            raise
        return conn, endpoint, response

    def _attempt_failed(
        self, cluster: ClusterRuntime, endpoint: EndpointState, failure: Literal["timeout", "reset"]
    ) -> None:
        cluster.breaker.release_request()
        now = time.monotonic()
        endpoint.request_finished(now, now - self.started, ok=False)
        cluster.outlier.record(endpoint, status=None, failure=failure, now=now)

    def _hash_key(self, cluster: ClusterRuntime) -> bytes | None:
        ch = cluster.settings.consistent_hash
        if ch is None:
            return None
        if ch.header:
            wanted = ch.header.lower().encode()
            for name, value in self.headers:
                if name == wanted:
                    return value
            return None
        if ch.cookie:
            prefix = ch.cookie.encode() + b"="
            for name, value in self.headers:
                if name == b"cookie":
                    for raw in value.split(b";"):
                        part = raw.strip()
                        if part.startswith(prefix):
                            return part[len(prefix) :]
            return None
        if ch.source_ip:
            return self.downstream.peer_host.encode()
        return None

    def _upstream_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [
            (n, v)
            for n, v in strip_hop_by_hop(self.headers, keep_upgrade=self.head.upgrade is not None)
            if n not in FRAMING_HEADERS
        ]
        body = self.body
        if body is not None:
            framing = self.head.framing
            if framing.kind == "chunked":
                headers.append((b"transfer-encoding", b"chunked"))
            elif framing.kind == "length":
                headers.append((b"content-length", str(framing.length).encode()))
        if self.head.upgrade is not None:
            headers.append((b"connection", b"upgrade"))
        return headers

    async def _send_body(self, conn: UpstreamHttp1, replay: list[bytes] | None) -> None:
        body = self.body
        if body is None:
            return
        chunked = self.head.framing.kind == "chunked"
        if replay is not None:
            for chunk in replay:
                conn.write(encode_chunk(chunk) if chunked else chunk)
            if chunked:
                conn.write(encode_last_chunk(body.trailers))
            return
        while (piece := await body.next_chunk()) is not None:
            conn.write(encode_chunk(piece) if chunked else piece)
            await conn.wait_writable()
        if chunked:
            conn.write(encode_last_chunk(body.trailers))

    async def _respond(
        self,
        conn: UpstreamHttp1,
        endpoint: EndpointState,
        cluster: ClusterRuntime,
        response: ResponseReceived,
        chain: RuleChain | None,
    ) -> None:
        self.status = response.status
        stripped = strip_hop_by_hop(response.headers, keep_upgrade=response.status == 101)
        if response.framing.kind == "none":
            # HEAD, 204, 304: no body, but Content-Length still says what GET would send.
            headers = [(n, v) for n, v in stripped if n != b"transfer-encoding"]
        else:
            headers = [(n, v) for n, v in stripped if n not in FRAMING_HEADERS]
        if chain is not None:
            for response_filter in chain.response:
                headers = response_filter.on_response(self, headers)
        self.response_started = True
        done = self.downstream.start_response(self, response, headers, conn)
        try:
            await done
        finally:
            now = time.monotonic()
            cluster.breaker.release_request()
            ok = response.status < 500
            endpoint.request_finished(now, now - self.started, ok=ok)
            cluster.outlier.record(endpoint, status=response.status, failure=None, now=now)


def retry_allowed(
    policy: cfg.RetryPolicy | None,
    method: bytes,
    body_replayable: bool,
    *,
    status: int | None = None,
    error: ProxyError | None = None,
) -> bool:
    """Whether an attempt that ended like this may be repeated under `policy`.

    A connect failure never reached the upstream, so any request may be retried after
    it; anything else is retried only for idempotent methods whose body we still hold.
    """
    if policy is None or policy.attempts == 0:
        return False
    conditions = policy.retry_on
    if isinstance(error, UpstreamConnectFailed):
        return "connect-failure" in conditions or "gateway-error" in conditions
    if method not in IDEMPOTENT or not body_replayable:
        return False
    if error is not None:
        if isinstance(error, UpstreamReset):
            return "reset" in conditions or "5xx" in conditions
        if isinstance(error, UpstreamTimeout):
            return "5xx" in conditions or "gateway-error" in conditions
        return False
    if status is None:
        return False
    if "5xx" in conditions and status >= 500:
        return True
    if "gateway-error" in conditions and status in GATEWAY_ERRORS:
        return True
    return "retriable-status-codes" in conditions and status in policy.retriable_status_codes


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.3g}s"


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _port_of(host: str) -> int | None:
    if host.count(":") == 1:
        port = host.rsplit(":", 1)[1]
        if port.isdigit():
            return int(port)
    return None


def _first_http_port(route: cfg.ServiceRoute) -> int:
    for port in route.ports:
        if port.protocol in ("HTTP", "HTTP2", "GRPC"):
            return port.port
    return route.ports[0].port if route.ports else 80
