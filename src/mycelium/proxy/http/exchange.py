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

Two paths, one behaviour. The common request is routed and sent synchronously inside
the downstream's read callback, and its response head handled in the upstream's (`start`,
no task). Whatever must wait (an on-demand subscription, a delay fault, a mirror, a new
connection, a retry) goes the asynchronous way (`run`, `_continue`), which picks up where
the synchronous path stood, so that every request is counted and accounted for once.

An upgrade (WebSocket) always goes the asynchronous way: routed like any request, sent
once (never retried) on a connection of its own; a 101 hands both connections to a byte
relay (`DownstreamHttp1.switch_protocols`), any other answer is an ordinary response. A
101 to a request that did not ask for it is the upstream's protocol error.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING, Literal

from mycelium.discovery import config as cfg
from mycelium.proxy.destination import duration_text, find_route, service_port
from mycelium.proxy.errors import (
    CircuitOpen,
    ClientGone,
    NoHealthyUpstream,
    NoRoute,
    ProxyError,
    RetryBudgetExhausted,
    UpstreamConnectFailed,
    UpstreamProtocolViolation,
    UpstreamReset,
    UpstreamTimeout,
)
from mycelium.proxy.filters.authorization import Authorizer, http_request
from mycelium.proxy.filters.chain import RuleChain
from mycelium.proxy.http.body import BodyStream
from mycelium.proxy.mirroring import mirror_http1
from mycelium.proxy.protocols.headers import (
    add_forwarding,
    client_certificate_field,
    strip_hop_by_hop,
)
from mycelium.proxy.protocols.http1 import (
    RequestReceived,
    ResponseReceived,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
    encode_response_head,
)
from mycelium.proxy.routing import DEFAULT_TIMEOUT_SECONDS, CompiledRule, RequestFacts
from mycelium.proxy.upstream.hash_key import request_hash_key

if TYPE_CHECKING:
    from mycelium.proxy.active_config import Destination
    from mycelium.proxy.core import ProxyCore
    from mycelium.proxy.http.downstream import DownstreamHttp1
    from mycelium.proxy.http.upstream import UpstreamHttp1
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState
    from mycelium.telemetry.tracing import Span

# Between retries: 25 ms doubling, with jitter (Envoy's default base interval).
RETRY_BACKOFF_BASE_SECONDS = 0.025
RETRY_BACKOFF_MAX_SECONDS = 0.25
# Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
GATEWAY_ERRORS = frozenset({502, 503, 504})
# Set again by whoever writes a message, from its actual framing.
FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})
# Response framings whose head goes to the client as received, when it is `forwardable`.
_FORWARDED_FRAMINGS = frozenset({"length", "chunked"})
# Responses without a body whatever their fields say (RFC 9110 sections 15.3.5, 15.4.5).
NO_BODY_STATUSES = frozenset({204, 304})

# outbound: an app's calls; inbound: a peer's calls to the app; local: one service's
# own port; gateway: a gateway listener's port, routed by its virtual hosts.
type ListenerKind = Literal["outbound", "inbound", "local", "gateway"]


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
    __slots__ = (  # the private ones are the synchronous path's state (see `start`)
        "_chain",
        "_cluster",
        "_conn",
        "_done",
        "_endpoint",
        "_finished",
        "_rule",
        "_sent_at",
        "_task",
        "_timer",
        "body",
        "bytes_sent",
        "cluster_name",
        "deadline",
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
        "response_head_at",
        "response_started",
        "rule_name",
        "service",
        "span",
        "started",
        "status",
        "target",
        "upstream_host",
    )
    protocol = "HTTP/1.1"
    grpc = False  # gRPC needs HTTP/2
    grpc_status = ""

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
        # tracing: None until decided where the upstream head is built (`_trace`)
        self.span: Span | Literal[False] | None = None
        self.response_head_at = 0.0  # when the upstream's response head came (0: none)
        self.response_started = False
        self.deadline = 0.0  # when the core's sweep times the response head out (0: never)
        self._done: asyncio.Future[None] | None = None  # the async path awaits the response
        self._finished = False
        self._cluster: ClusterRuntime | None = None
        self._rule: CompiledRule | None = None
        self._chain: RuleChain | None = None
        self._conn: UpstreamHttp1 | None = None  # the attempt awaiting its response head
        self._endpoint: EndpointState | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sent_at = 0.0
        self._task: asyncio.Task[None] | None = None  # the asynchronous path, once spawned

    @property
    def bytes_received(self) -> int:
        """Request body bytes from the client (counted by the body, not per request)."""
        body = self.body
        return body.total if body is not None else 0

    # --- entry points ----------------------------------------------------------------------

    def start(self) -> None:
        """Begin the exchange: at once, inside the caller's callback, when nothing has to
        be awaited; otherwise as a task (`run`)."""
        head = self.head
        if self.target[:1] == b"/" and head.upgrade is None:
            body = self.body
            if body is None or body.replay() is not None:
                try:
                    if self.listener.kind == "inbound":
                        self._start_inbound_now()
                        return
                    if self._start_now():
                        return
                except Exception as exc:  # a bug must cost one request, no more
                    self._failed(exc)
                    self._finish()
                    return
        self._task = self.proxy.spawn(self.run())

    async def run(self) -> None:
        """The asynchronous path: route, wait where a rule says so, forward, retry."""
        try:
            if self.listener.kind == "inbound":
                await self._inbound()
            else:
                await self._outbound()
        except Exception as exc:  # a bug must cost one request, not the connection's others
            self._failed(exc)
        finally:
            self._finish()

    def client_left(self) -> None:
        """The client closed its connection before the response began (the downstream
        calls this). As Envoy does, the attempt in flight is given up, since nobody will
        read its answer and an upstream connection mid-request cannot be reused, and the
        request ends with status 0 and reason `client_reset` (flag DC)."""
        if self._finished or self.response_started:
            return
        self.reason = "client_reset"
        conn = self._conn
        if conn is not None:  # the synchronous attempt awaits its response head
            self._disarm()
            self._conn = None
            conn.detach_listener()
            conn.abort()
            cluster, endpoint = self._cluster, self._endpoint
            if cluster is not None and endpoint is not None:
                self._attempt_abandoned(cluster, endpoint)
            self._finish()
        elif self._task is not None:
            self._task.cancel()  # `_attempt` lets go of its connection; `run` finishes us

    def _failed(self, exc: BaseException) -> None:
        """Answer for a request that went wrong (or cut a response that had started)."""
        if isinstance(exc, ClientGone):  # nobody to answer: a DC, not a proxy error
            self.reason = self.reason or "client_reset"
            return
        if isinstance(exc, ProxyError):
            self.reason = exc.reason
            self.status = exc.status
            error = exc
        else:
            self.reason = "internal_error"
            self.status = 500
            self.proxy.log.error("request failed inside the proxy: %s", exc, exc_info=exc)
            error = ProxyError(f"internal error: {exc}")
        if not self.response_started:
            self.downstream.local_reply(self, error)
        else:
            self.downstream.abort()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.proxy.exchange_finished(self)

    # --- the synchronous path ----------------------------------------------------------------
    #
    # The common request (origin-form, its body complete, a rule with no delay or mirror,
    # an idle pooled connection to the endpoint) is routed inside the downstream's read
    # callback and written upstream at once; the response head comes back in a callback
    # from the upstream connection. No task, future or timeout context is made for it:
    # a rule's timeout is one `call_at` handle, the default one the core's sweep. Anything
    # else hands over to the asynchronous path, which continues from where this one stood.

    def _start_now(self) -> bool:
        """Route and send the request now; False (having changed nothing) to leave it to
        `run`."""
        proxy = self.proxy
        config = proxy.active
        listener = self.listener
        if listener.kind == "gateway":
            # raises a 404 (answered by `start`) when no listener serves the host
            destination: Destination | None = config.gateway_destination(
                listener.port or 0, self.head.host
            )
        else:
            destination = config.destination(listener.reference or self.head.host)
        if destination is None:
            return False  # unknown yet: `run` subscribes and waits for its config
        route = destination.route
        rule = route.catch_all
        if rule is None:
            facts = RequestFacts.from_fields(
                self.method.decode("latin-1"), self.target.decode("latin-1"), self.headers
            )
            rule = route.match(facts)
            if rule is None:
                return False
            self.facts = facts
        if rule.waits:
            return False
        if listener.kind == "gateway":
            # who may pass through this gateway (raises a 403, answered by `start`)
            self._authorize(config.authorizer, listener.port or 0)
        self.host = destination.host or self.head.host.decode("latin-1")
        self.service = destination.service
        if self.port is None:
            self.port = destination.port
        self.rule_name = rule.rule.name
        chain: RuleChain = rule.state
        for request_filter in chain.request:
            request_filter.on_request(self)  # no delay: `rule.waits` would have said so
        backend = rule.only or rule.pick_backend(proxy.rng.random())
        if backend is None:
            raise NoHealthyUpstream(f"every backend of rule {rule.rule.name} has weight 0")
        cluster = proxy.cluster(config, backend.cluster, backend.port or self.port)
        self.cluster_name = cluster.name
        self._cluster = cluster
        self._rule = rule
        self._chain = chain
        self._send_now(cluster, rule)
        return True

    def _start_inbound_now(self) -> None:
        """What `_inbound` does, with the request sent at once if a connection is idle."""
        head = self.head
        self.host = head.host.decode("latin-1")
        self.facts = RequestFacts.from_fields(
            self.method.decode("latin-1"), self.target.decode("latin-1"), self.headers
        )
        config = self.proxy.active
        port = self.listener.port or 0
        self._authorize(config.authorizer, port)
        for limit in config.rate_limits:
            if limit.applies(port):
                limit.on_request(self)
        self.headers = add_forwarding(
            self.headers,
            client_address=self.downstream.peer_host,
            proto="http",
            host=head.host or None,
            client_certificate=client_certificate_field(
                config.inbound.identity if config.inbound else None,
                self.downstream.peer_principal,
            ),
        )
        inbound = self.listener.inbound_port or config.inbound_ports.get(port)
        target_port = inbound.target_port if inbound is not None else port
        self.service = inbound.service if inbound is not None else ""
        cluster = self.proxy.local_app(target_port)
        self.cluster_name = cluster.name
        self._cluster = cluster
        self._send_now(cluster, None)

    def _trace(self) -> None:
        """Where the upstream head is about to be built: continue or start the trace
        (the tracer rewrites the trace headers of a sampled request)."""
        tracer = self.proxy.tracer
        if tracer is not None:
            tracer.begin(self)

    def _send_now(self, cluster: ClusterRuntime, rule: CompiledRule | None) -> None:
        self._trace()
        now = time.monotonic()
        self._sent_at = now
        hashed = cluster.settings.consistent_hash is not None
        endpoint = cluster.pick(now, self._hash_key(cluster) if hashed else None)
        if endpoint is None:
            raise _no_healthy_endpoint(cluster)
        conn = self.proxy.pool_for(cluster, endpoint).take_idle()
        if conn is None:
            # Connecting is the async path's work; it goes to the endpoint picked here,
            # so that the balancer's choices are not spent twice.
            self._task = self.proxy.spawn(self._continue(0, None, endpoint))
            return
        cluster.retry_budget.record_request(now)
        if not cluster.breaker.try_acquire_request():
            conn.pool.release(conn)
            raise CircuitOpen(f"cluster {cluster.name} is at its limit of requests in flight")
        self.upstream_host = endpoint.key
        endpoint.request_started(now)
        self._endpoint = endpoint
        self._conn = conn
        self.proxy.counters["requests_sync"] += 1
        limit = rule.attempt_timeout if rule is not None else None
        if limit is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + limit, self.timed_out)
        else:
            self.deadline = now + DEFAULT_TIMEOUT_SECONDS
        head = self.head
        # a traced request's head changes (its traceparent): it is built anew
        if rule is not None and rule.keeps_head and head.forwardable and not self.span:
            conn.begin_with(self.method, head.raw_head, self)
        else:
            request_head = encode_request_head(self.method, self.target, self._upstream_headers())
            conn.begin_with(self.method, request_head, self)
        body = self.body
        if body is not None:
            replay = body.replay()
            assert replay is not None  # `start` checked it
            self._write_replay(conn, body, replay)

    def _disarm(self) -> None:
        self.deadline = 0.0
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()

    def upstream_responded(self, conn: UpstreamHttp1, response: ResponseReceived) -> None:
        """The response head to the synchronous attempt (called by the upstream)."""
        self.response_head_at = time.monotonic()
        self._disarm()
        self._conn = None
        cluster = self._cluster
        endpoint = self._endpoint
        assert cluster is not None
        assert endpoint is not None
        if response.status == 101:  # the synchronous path never sends an upgrade
            conn.abort()
            self._attempt_over(_unasked_switch(endpoint), "reset")
            return
        try:
            policy = self._rule.rule.retries if self._rule is not None else None
            if (
                policy is not None
                and policy.attempts > 0
                and retry_allowed(policy, self.method, True, status=response.status)
            ):
                last_error = ProxyError(f"upstream answered {response.status}")
                last_error.reason = f"status_{response.status}"
                cluster.breaker.release_request()
                endpoint.request_finished(time.monotonic(), 0.0, ok=False)
                conn.abort()  # its body is not wanted; a fresh connection is cheaper
                self.proxy.counters["sync_retries_handed_over"] += 1
                self._task = self.proxy.spawn(self._continue(1, last_error))
                return
            self.status = response.status
            headers, raw = self._response_head(response, self._chain)
            self.response_started = True
            self.downstream.start_response(
                self, response, headers, conn, raw_head=raw, hold_head=True
            )
        except Exception as exc:  # a bug must cost one request, no more
            self._failed(exc)
            self._finish()

    def upstream_failed(self, conn: UpstreamHttp1, exc: BaseException) -> None:
        """The synchronous attempt's connection failed before a response head."""
        self._disarm()
        self._conn = None
        self._attempt_over(exc, "reset")

    def timed_out(self) -> None:
        """The synchronous attempt's response head is overdue (a timer, or the sweep)."""
        conn = self._conn
        self._disarm()
        if conn is None or self._finished:
            return
        self._conn = None
        conn.detach_listener()
        conn.abort()
        rule = self._rule.rule if self._rule is not None else None
        policy = rule.retries if rule is not None else None
        per_try = policy.per_try_timeout if policy is not None else None
        overall = (rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS
        limit = min(per_try or math.inf, overall)
        which = "the route's timeout" if limit == overall else "the per-try timeout"
        key = self._endpoint.key if self._endpoint is not None else "the upstream"
        self._attempt_over(
            UpstreamTimeout(f"{key} did not answer within {duration_text(limit)} ({which})"),
            "timeout",
        )

    def _attempt_over(self, exc: BaseException, failure: Literal["timeout", "reset"]) -> None:
        cluster = self._cluster
        endpoint = self._endpoint
        assert cluster is not None
        assert endpoint is not None
        self._attempt_failed(cluster, endpoint, failure)
        policy = self._rule.rule.retries if self._rule is not None else None
        if (
            isinstance(exc, (UpstreamReset, UpstreamTimeout))
            and policy is not None
            and policy.attempts > 0
            and retry_allowed(policy, self.method, True, error=exc)
        ):
            self.proxy.counters["sync_retries_handed_over"] += 1
            self._task = self.proxy.spawn(self._continue(1, exc))
            return
        self._failed(exc)
        self._finish()

    def response_over(self, exc: BaseException | None) -> None:
        """The response body ended (`exc` None) or failed (called by the downstream)."""
        done = self._done
        if done is not None:  # the async path awaits it
            if not done.done():
                if exc is None:
                    done.set_result(None)
                else:
                    done.set_exception(exc)
            return
        if self._finished:
            return
        cluster = self._cluster
        endpoint = self._endpoint
        if cluster is not None and endpoint is not None:
            now = time.monotonic()
            cluster.breaker.release_request()
            status = self.status
            endpoint.request_finished(now, now - self.started, ok=status < 500)
            cluster.outlier.record(endpoint, status=status, failure=None, now=now)
        if exc is not None:
            self._failed(exc)
        self._finish()

    async def _continue(
        self, attempt: int, last_error: ProxyError | None, endpoint: EndpointState | None = None
    ) -> None:
        """The asynchronous path from `attempt` on, after the synchronous one handed over."""
        cluster = self._cluster
        rule = self._rule
        assert cluster is not None
        try:
            timeout = (rule.rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS
            spent = time.monotonic() - self._sent_at
            deadline = asyncio.get_running_loop().time() + timeout - spent
            await self._forward(
                cluster,
                rule,
                self._chain,
                first=attempt,
                last_error=last_error,
                deadline=deadline,
                first_endpoint=endpoint,
            )
        except Exception as exc:  # a bug must cost one request, no more
            self._failed(exc)
        finally:
            self._finish()

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
        config, service, route = await find_route(proxy, self.listener, self.host)
        if self.listener.kind == "gateway":
            self._authorize(config.authorizer, self.listener.port or 0)
        self.service = service
        if self.port is None:
            self.port = service_port(self.host, bool(self.listener.reference), route.route)
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
        self._trace()
        if rule.rule.mirror is not None:
            mirror_http1(proxy, self, config, rule.rule.mirror, port)
        await self._forward(cluster, rule, chain)

    # --- inbound -----------------------------------------------------------------------------

    def _authorize(self, authorizer: Authorizer, port: int) -> None:
        """The workload's AuthorizationPolicies; raises `Denied` (403 `denied`)."""
        if authorizer.active:
            downstream = self.downstream
            request = http_request(
                downstream.peer_host,
                port,
                self.method,
                self.target,
                self.headers,
                principal=downstream.peer_principal,
            )
            authorizer.enforce(request, self.proxy.counters)

    async def _inbound(self) -> None:
        facts = self._request_facts()
        config = self.proxy.active
        port = self.listener.port or 0
        self._authorize(config.authorizer, port)
        for limit in config.rate_limits:
            if limit.applies(port):
                limit.on_request(self)
        del facts
        self.headers = add_forwarding(
            self.headers,
            client_address=self.downstream.peer_host,
            proto="http",
            host=self.host.encode("latin-1") if self.host else None,
            client_certificate=client_certificate_field(
                config.inbound.identity if config.inbound else None,
                self.downstream.peer_principal,
            ),
        )
        inbound = self.listener.inbound_port or config.inbound_ports.get(port)
        target_port = inbound.target_port if inbound is not None else port
        self.service = inbound.service if inbound is not None else ""
        cluster = self.proxy.local_app(target_port)
        self._trace()
        await self._forward(cluster, None, None)

    # --- forwarding with retries ----------------------------------------------------------

    async def _forward(
        self,
        cluster: ClusterRuntime,
        rule: CompiledRule | None,
        chain: RuleChain | None,
        *,
        first: int = 0,
        last_error: ProxyError | None = None,
        deadline: float | None = None,
        first_endpoint: EndpointState | None = None,
    ) -> None:
        """Attempt, and retry as the rule allows, from attempt number `first` (more than
        0 when the synchronous path made the first attempts and failed with
        `last_error`); `deadline` is the route's, in loop time, if already running;
        `first_endpoint` is where the first attempt goes, if already picked."""
        self.cluster_name = cluster.name
        upgrade = self.head.upgrade is not None
        # An upgrade is never retried: its connection becomes the client's own stream.
        policy = rule.rule.retries if rule is not None and not upgrade else None
        timeout = (rule.rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout
        attempts = 1 + (policy.attempts if policy is not None else 0)
        budget = cluster.retry_budget
        if first == 0:
            budget.record_request(time.monotonic())
        replay = self.body.replay() if self.body is not None else []
        for attempt in range(first, attempts):
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
                picked, first_endpoint = first_endpoint, None
                conn, endpoint, response = await self._attempt(
                    cluster,
                    replay,
                    budget_for_try,
                    overall=budget_for_try == remaining,
                    stated=timeout if budget_for_try == remaining else budget_for_try,
                    picked=picked,
                )
            except (UpstreamConnectFailed, UpstreamReset, UpstreamTimeout) as exc:
                last_error = exc
                if attempt + 1 < attempts and retry_allowed(
                    policy, self.method, replay is not None, error=exc
                ):
                    continue
                raise
            if response.status == 101 and not upgrade:
                conn.abort()
                self._attempt_failed(cluster, endpoint, "reset")
                raise _unasked_switch(endpoint)
            if response.upgrade:
                self._switch(conn, endpoint, cluster, response, chain)
                return
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
        raise UpstreamTimeout(f"no response from {cluster.name} within {duration_text(timeout)}")

    async def _attempt(
        self,
        cluster: ClusterRuntime,
        replay: list[bytes] | None,
        timeout: float,
        *,
        overall: bool,
        stated: float | None = None,  # the timeout to name when it expires, as configured
        picked: EndpointState | None = None,
    ) -> tuple[UpstreamHttp1, EndpointState, ResponseReceived]:
        now = time.monotonic()
        endpoint = picked or cluster.pick(now, self._hash_key(cluster))
        if endpoint is None:
            raise _no_healthy_endpoint(cluster)
        if not cluster.breaker.try_acquire_request():
            raise CircuitOpen(f"cluster {cluster.name} is at its limit of requests in flight")
        self.upstream_host = endpoint.key
        pool = self.proxy.pool_for(cluster, endpoint)
        connect_timeout = cluster.settings.connection_pool.connect_timeout
        try:
            if self.head.upgrade is not None:
                conn = await pool.connect(connect_timeout)
            else:
                conn = await pool.acquire(connect_timeout)
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
            self.response_head_at = time.monotonic()
        except TimeoutError:
            conn.abort()
            self._attempt_failed(cluster, endpoint, "timeout")
            which = "the route's timeout" if overall else "the per-try timeout"
            raise UpstreamTimeout(
                f"{endpoint.key} did not answer within {duration_text(stated or timeout)} ({which})"
            ) from None
        except UpstreamReset:
            self._attempt_failed(cluster, endpoint, "reset")
            raise
        except ProxyError:
            self._attempt_failed(cluster, endpoint, "reset")
            raise
        except (asyncio.CancelledError, ClientGone):
            # The client left (`client_left`, or its body ended with the connection):
            # nobody wants this answer, and the endpoint did nothing wrong.
            conn.abort()
            self._attempt_abandoned(cluster, endpoint)
            raise
        return conn, endpoint, response

    def _attempt_abandoned(self, cluster: ClusterRuntime, endpoint: EndpointState) -> None:
        """An attempt nobody waits for any more (the client left): its slot is freed,
        and it counts as no failure of the endpoint's."""
        cluster.breaker.release_request()
        now = time.monotonic()
        endpoint.request_finished(now, now - self.started, ok=True)

    def _attempt_failed(
        self, cluster: ClusterRuntime, endpoint: EndpointState, failure: Literal["timeout", "reset"]
    ) -> None:
        cluster.breaker.release_request()
        now = time.monotonic()
        endpoint.request_finished(now, now - self.started, ok=False)
        cluster.outlier.record(endpoint, status=None, failure=failure, now=now)

    def _hash_key(self, cluster: ClusterRuntime) -> bytes | None:
        return request_hash_key(
            cluster.settings.consistent_hash, self.headers, self.downstream.peer_host
        )

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
            self._write_replay(conn, body, replay)
            return
        while (piece := await body.next_chunk()) is not None:
            conn.write(encode_chunk(piece) if chunked else piece)
            await conn.wait_writable()
        if chunked:
            conn.write(encode_last_chunk(body.trailers))

    def _response_head(
        self, response: ResponseReceived, chain: RuleChain | None
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        """The response's fields for the client, or its head as received when it needs
        no change at all (then the fields are not worked out)."""
        if (
            response.forwardable
            and (chain is None or not chain.response)
            and response.framing.kind in _FORWARDED_FRAMINGS
            and response.status >= 200
            and response.status not in NO_BODY_STATUSES
            and self.method != b"HEAD"
            and self.head.keep_alive
            and not self.proxy.draining
        ):
            return [], response.raw_head
        stripped = strip_hop_by_hop(response.headers, keep_upgrade=response.status == 101)
        if response.framing.kind == "none":
            # HEAD, 204, 304: no body, but Content-Length still says what GET would send.
            headers = [(n, v) for n, v in stripped if n != b"transfer-encoding"]
        else:
            headers = [(n, v) for n, v in stripped if n not in FRAMING_HEADERS]
        if chain is not None:
            for response_filter in chain.response:
                headers = response_filter.on_response(self, headers)
        return headers, None

    def _write_replay(self, conn: UpstreamHttp1, body: BodyStream, replay: list[bytes]) -> None:
        if self.head.framing.kind == "chunked":
            for chunk in replay:
                conn.write(encode_chunk(chunk))
            conn.write(encode_last_chunk(body.trailers))
        else:
            for chunk in replay:
                conn.write(chunk)

    def _switch(
        self,
        conn: UpstreamHttp1,
        endpoint: EndpointState,
        cluster: ClusterRuntime,
        response: ResponseReceived,
        chain: RuleChain | None,
    ) -> None:
        """The upstream accepted the upgrade: send its 101 on and become a byte pipe.
        For the exchange, the request ends here; the relay lives on by itself."""
        self.status = response.status
        headers = strip_hop_by_hop(response.headers, keep_upgrade=True)
        if chain is not None:
            for response_filter in chain.response:
                headers = response_filter.on_response(self, headers)
        headers.append((b"connection", b"upgrade"))
        try:
            switched = self.downstream.switch_protocols(
                encode_response_head(response.status, response.reason, headers), conn
            )
            self.response_started = switched
        finally:
            now = time.monotonic()
            cluster.breaker.release_request()
            endpoint.request_finished(now, now - self.started, ok=True)
            cluster.outlier.record(endpoint, status=response.status, failure=None, now=now)
        if not switched:
            conn.abort()
            raise UpstreamReset("a connection ended while switching protocols")

    async def _respond(
        self,
        conn: UpstreamHttp1,
        endpoint: EndpointState,
        cluster: ClusterRuntime,
        response: ResponseReceived,
        chain: RuleChain | None,
    ) -> None:
        self.status = response.status
        headers, raw = self._response_head(response, chain)
        self.response_started = True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done = done  # set before the head goes: the body may end while it does
        self.downstream.start_response(self, response, headers, conn, raw_head=raw)
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


def _unasked_switch(endpoint: EndpointState) -> UpstreamProtocolViolation:
    return UpstreamProtocolViolation(
        f"{endpoint.key} answered 101 Switching Protocols to a request that did not ask to "
        "upgrade; check the upstream application"
    )


def _no_healthy_endpoint(cluster: ClusterRuntime) -> NoHealthyUpstream:
    return NoHealthyUpstream(
        f"cluster {cluster.name} has no healthy endpoint "
        f"({len(cluster.endpoints)} known, the rest ejected or unhealthy)"
    )
