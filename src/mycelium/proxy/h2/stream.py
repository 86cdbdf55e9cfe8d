"""One HTTP/2 stream through the proxy: routed, filtered, forwarded, retried.

The same decisions as the HTTP/1 exchange, reusing its parts: the service from
`:authority`, `CompiledRoute.match` on `RequestFacts`, the rule's filter chain, a
backend by weight, the cluster's balancer, outlier detection, circuit breaker and retry
budget. Retries happen only before any response byte went downstream, and only while
the request body is still held whole (`REPLAY_LIMIT_BYTES`); gRPC calls are POSTs, so
only connect failures retry them.

Flow control runs end to end: request bytes are acknowledged to the client when the
upstream connection takes them, response bytes to the endpoint when the downstream
connection takes them. Nothing in between grows without a window to match.

A finished stream is counted and written to the access log by `ProxyCore.record`, as
an HTTP/1.1 exchange is; `h2_streams` counts streams alone. A rule's mirror copies the
stream over HTTP/2 once its body is whole (`whole_body`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Literal

from h2.errors import ErrorCodes

from mycelium.proxy.destination import duration_text, find_route, service_port
from mycelium.proxy.errors import (
    CircuitOpen,
    ClientGone,
    NoHealthyUpstream,
    NoRoute,
    ProxyError,
    RetryBudgetExhausted,
    UpstreamConnectFailed,
    UpstreamReset,
    UpstreamTimeout,
    UpstreamUnprocessed,
)
from mycelium.proxy.filters.authorization import http_request
from mycelium.proxy.h2.upstream import UpstreamHttp2, pools_of
from mycelium.proxy.http.exchange import (
    RETRY_BACKOFF_BASE_SECONDS,
    RETRY_BACKOFF_MAX_SECONDS,
    Listener,
    retry_allowed,
)
from mycelium.proxy.mirroring import mirror_http2
from mycelium.proxy.protocols.headers import (
    add_forwarding,
    client_certificate_field,
    trailers_to_forward,
)
from mycelium.proxy.protocols.http2 import (
    REPLAY_LIMIT_BYTES,
    Fields,
    Http2Request,
    grpc_status_for,
    grpc_timeout,
    parse_response,
    request_block,
    response_block,
)
from mycelium.proxy.routing import DEFAULT_TIMEOUT_SECONDS, CompiledRule, RequestFacts
from mycelium.proxy.upstream.hash_key import request_hash_key

if TYPE_CHECKING:
    from mycelium.proxy.active_config import ActiveConfig
    from mycelium.proxy.core import ProxyCore
    from mycelium.proxy.filters.chain import RuleChain
    from mycelium.proxy.h2.downstream import DownstreamHttp2
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState
    from mycelium.telemetry.tracing import Span


# A stream the endpoint never processed is sent again on a fresh connection at most this
# often (an endpoint that refuses everything must not be hammered).
MAX_UNPROCESSED_REPEATS = 3


class Http2Exchange:
    protocol = "HTTP/2"

    def __init__(
        self,
        proxy: ProxyCore,
        downstream: DownstreamHttp2,
        stream_id: int,
        request: Http2Request,
        listener: Listener,
    ) -> None:
        self.proxy = proxy
        self.downstream = downstream
        self.stream_id = stream_id
        self.listener = listener
        self.grpc = request.is_grpc
        self.scheme = request.scheme
        # What the filters see and may change (the HTTP/1 exchange's names): the
        # authority travels as a `host` field while filters run.
        self.method = request.method
        self.target = request.path
        self.host = request.authority.decode("latin-1")
        self.headers: Fields = [*request.headers, (b"host", request.authority)]
        self.facts: RequestFacts | None = None
        self.service = ""
        self.port = listener.port
        self.rule_name = ""
        self.cluster_name = ""
        self.upstream_host = ""
        self.status = 0
        self.reason = ""
        self.bytes_sent = 0
        self.bytes_received = 0  # request body bytes from the client
        self.grpc_status = ""
        self.started = time.monotonic()
        # tracing: None until decided where the upstream request is built (`_trace`)
        self.span: Span | Literal[False] | None = None
        self.response_head_at = 0.0  # when the upstream's response head came (0: none)
        self.response_started = False
        # request body, from the client
        self._unsent: deque[bytes] = deque()  # arrived while no attempt was bound
        self._replay: list[bytes] | None = []  # the whole body, while small enough
        self._replay_size = 0
        self._body_ended = False
        self._trailers: Fields | None = None
        self._acked = 0  # body bytes acknowledged to the client
        self._sent_this_attempt = 0
        # the current attempt
        self._upstream: UpstreamHttp2 | None = None
        self._upstream_id = 0
        self._head: asyncio.Future[Fields] | None = None
        self._block: Fields | None = None  # the request block, built once for every attempt
        self._early: list[bytes] = []  # response bytes before the head went downstream
        self._unacked = 0  # response bytes taken from the endpoint, not yet acknowledged
        self._early_end: tuple[bool, Fields | None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._body_waiter: asyncio.Future[None] | None = None  # for `whole_body`
        self._gone = False

    # --- entry point -----------------------------------------------------------------------

    async def run(self) -> None:
        proxy = self.proxy
        try:
            if self.listener.kind == "inbound":
                await self._inbound()
            else:
                await self._outbound()
        except ClientGone:
            self.reason = self.reason or "client_reset"
        except ProxyError as exc:
            self.reason = exc.reason
            self.status = exc.status
            if self.grpc:
                self.grpc_status = str(grpc_status_for(exc.status))
            self._give_up(exc)
        except Exception as exc:  # a bug must cost one stream, not the connection's others
            self.reason = "internal_error"
            self.status = 500
            proxy.log.exception("an HTTP/2 stream failed inside the proxy: %s", exc)
            self._give_up(ProxyError(f"internal error: {exc}"))
        finally:
            proxy.counters["h2_streams"] += 1
            proxy.record(self)
            self.downstream.stream_done(self)

    def _give_up(self, exc: ProxyError) -> None:
        self._cancel_upstream()
        if self._gone:
            return
        if not self.response_started:
            self.response_started = True
            self.bytes_sent += self.downstream.local_reply(self, exc)
        else:
            self.downstream.reset_stream(self.stream_id, ErrorCodes.INTERNAL_ERROR)

    # --- events from the downstream connection ---------------------------------------------

    def request_data(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._replay is not None:
            if self._replay_size + len(data) <= REPLAY_LIMIT_BYTES:
                self._replay.append(data)
                self._replay_size += len(data)
            else:
                self._replay = None  # too large to keep: this request will not be retried
        if self._upstream is not None and not self._upstream.closed:
            self._upstream.send_data(self._upstream_id, data)
        else:
            self._unsent.append(data)

    def request_trailers(self, block: Fields) -> None:
        self._trailers = block

    def request_end(self) -> None:
        self._body_ended = True
        self._wake_body_waiter()
        if self._upstream is not None and not self._upstream.closed:
            self._upstream.end_request(self._upstream_id, self._trailers)

    def client_gone(self) -> None:
        """The client reset the stream, or its connection closed."""
        self._gone = True
        self._wake_body_waiter()
        self._cancel_upstream()
        for future in (self._head, self._done):
            if future is not None and not future.done():
                future.set_exception(ClientGone())

    async def whole_body(self) -> tuple[list[bytes], Fields | None] | None:
        """The request body and trailers once the client has sent them all; None when
        the body was too large to keep (`REPLAY_LIMIT_BYTES`) or the client went away."""
        if not self._body_ended and not self._gone:
            if self._body_waiter is None:
                self._body_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._body_waiter)
        if self._gone or self._replay is None:
            return None
        return list(self._replay), self._trailers

    def _wake_body_waiter(self) -> None:
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)

    # --- events from the upstream connection (the `ResponseSink`) -------------------------

    def response_headers(self, block: Fields) -> None:
        self.response_head_at = time.monotonic()
        if self._head is not None and not self._head.done():
            self._head.set_result(block)

    def response_data(self, data: bytes) -> None:
        self._unacked += len(data)
        if self.response_started and not self._gone:
            self.bytes_sent += len(data)
            self.downstream.send_data(self.stream_id, data)
        else:
            self._early.append(data)

    def response_trailers(self, block: Fields) -> None:
        self._end_response(trailers_to_forward(block, self.proxy.counters))

    def response_end(self) -> None:
        self._end_response(None)

    def _end_response(self, trailers: Fields | None) -> None:
        if self._early_end is not None:
            return  # trailers came first; their StreamEnded follows
        if trailers and self.grpc:
            for name, value in trailers:
                if name == b"grpc-status":
                    self.grpc_status = value.decode("latin-1")
        if not self.response_started:
            self._early_end = (True, trailers)
            return
        self._early_end = (True, trailers)
        if not self._gone:
            self.downstream.end_response(self.stream_id, trailers)
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def response_failed(self, exc: UpstreamReset) -> None:
        for future in (self._head, self._done):
            if future is not None and not future.done():
                future.set_exception(exc)
                return

    def request_data_sent(self, size: int) -> None:
        """The upstream took `size` more body bytes: acknowledge what the client has not
        had acknowledged yet (a retry sends the start of the body again)."""
        self._sent_this_attempt += size
        fresh = self._sent_this_attempt - self._acked
        if fresh > 0:
            self._acked += fresh
            self.downstream.acknowledge(self.stream_id, fresh)

    def response_sent(self, size: int) -> None:
        """The downstream took `size` response bytes: let the endpoint send as many more."""
        self._unacked -= size
        if self._upstream is not None:
            self._upstream.acknowledge(self._upstream_id, size)

    # --- outbound ----------------------------------------------------------------------------

    async def _outbound(self) -> None:
        proxy = self.proxy
        target = self.target.decode("latin-1")
        facts = RequestFacts.from_fields(self.method.decode("latin-1"), target, self.headers)
        self.facts = facts
        config, service, route = await find_route(proxy, self.listener, self.host)
        if self.listener.kind == "gateway":
            self._authorize(config, self.listener.port or 0)
        self.service = service
        if self.port is None:
            self.port = service_port(self.host, bool(self.listener.reference), route.route)
        rule = route.match(facts)
        if rule is None:
            raise NoRoute(f"no rule of service {service} matches {facts.method} {facts.path}")
        self.rule_name = rule.rule.name
        chain: RuleChain = rule.state
        for request_filter in chain.request:
            delay = request_filter.on_request(self)  # type: ignore[arg-type]
            if delay:
                await asyncio.sleep(delay)
        backend = rule.pick_backend(proxy.rng.random())
        if backend is None:
            raise NoHealthyUpstream(f"every backend of rule {rule.rule.name} has weight 0")
        port = backend.port or self.port
        cluster = proxy.cluster(config, backend.cluster, port)
        self._trace()
        if rule.rule.mirror is not None:
            mirror_http2(proxy, self, config, rule.rule.mirror, port)
        await self._forward(cluster, rule, chain)

    def _trace(self) -> None:
        """Before the request block is built: continue or start the trace (the tracer
        rewrites the trace headers of a sampled request)."""
        tracer = self.proxy.tracer
        if tracer is not None:
            tracer.begin(self)

    def _authorize(self, config: ActiveConfig, port: int) -> None:
        """The workload's AuthorizationPolicies (at a gateway: who may pass through it);
        raises `Denied` (403 `denied`)."""
        if config.authorizer.active:
            request = http_request(
                self.downstream.peer_host,
                port,
                self.method,
                self.target,
                self.headers,
                principal=self.downstream.peer_principal,
            )
            config.authorizer.enforce(request, self.proxy.counters)

    # --- inbound -----------------------------------------------------------------------------

    async def _inbound(self) -> None:
        config = self.proxy.active
        self.facts = RequestFacts.from_fields(
            self.method.decode("latin-1"), self.target.decode("latin-1"), self.headers
        )
        port = self.listener.port or 0
        self._authorize(config, port)
        for limit in config.rate_limits:
            if limit.applies(port):
                limit.on_request(self)  # type: ignore[arg-type]
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
        self._trace()
        await self._forward(self.proxy.local_app(target_port), None, None)

    # --- forwarding with retries ----------------------------------------------------------

    async def _forward(
        self, cluster: ClusterRuntime, rule: CompiledRule | None, chain: RuleChain | None
    ) -> None:
        self.cluster_name = cluster.name
        policy = rule.rule.retries if rule is not None else None
        timeout = (rule.rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS
        client_deadline = grpc_timeout(self.headers) if self.grpc else None
        if client_deadline is not None:
            timeout = min(timeout, client_deadline)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempts = 1 + (policy.attempts if policy is not None else 0)
        budget = cluster.retry_budget
        budget.record_request(time.monotonic())
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
                    RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_BASE_SECONDS * (2 ** (attempt - 1))
                ) * self.proxy.rng.uniform(0.5, 1.0)
                if loop.time() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            per_try = policy.per_try_timeout if policy is not None else None
            remaining = deadline - loop.time()
            try_timeout = min(per_try, remaining) if per_try else remaining
            try:
                endpoint, status, headers = await self._attempt_unless_refused(
                    cluster, attempt, try_timeout, overall=try_timeout == remaining
                )
            except (UpstreamConnectFailed, UpstreamReset, UpstreamTimeout) as exc:
                last_error = exc
                replayable = self._replay is not None or isinstance(exc, UpstreamConnectFailed)
                if attempt + 1 < attempts and retry_allowed(
                    policy, self.method, replayable, error=exc
                ):
                    continue
                raise
            if attempt + 1 < attempts and retry_allowed(
                policy, self.method, self._replay is not None, status=status
            ):
                last_error = ProxyError(f"upstream answered {status}")
                last_error.reason = f"status_{status}"
                self._attempt_over(cluster, endpoint, ok=False, status=status)
                self._cancel_upstream()
                continue
            await self._respond(cluster, endpoint, status, headers, chain)
            return
        assert last_error is not None
        if isinstance(last_error, (UpstreamConnectFailed, UpstreamReset, UpstreamTimeout)):
            raise last_error
        raise UpstreamTimeout(f"no response from {cluster.name} within {duration_text(timeout)}")

    async def _attempt_unless_refused(
        self, cluster: ClusterRuntime, attempt: int, timeout: float, *, overall: bool
    ) -> tuple[EndpointState, int, Fields]:
        """An attempt, repeated at once when the endpoint says it never processed it
        (a graceful GOAWAY, as nginx sends every keepalive_requests streams, or
        REFUSED_STREAM): that costs no retry and needs no retry policy, only the body."""
        refusals = 0
        while True:
            try:
                return await self._attempt(cluster, attempt, timeout, overall=overall)
            except UpstreamUnprocessed:
                refusals += 1
                if refusals > MAX_UNPROCESSED_REPEATS or self._replay is None:
                    raise

    async def _attempt(
        self, cluster: ClusterRuntime, attempt: int, timeout: float, *, overall: bool
    ) -> tuple[EndpointState, int, Fields]:
        now = time.monotonic()
        key = request_hash_key(
            cluster.settings.consistent_hash, self.headers, self.downstream.peer_host
        )
        endpoint = cluster.pick(now, key)
        if endpoint is None:
            raise NoHealthyUpstream(
                f"cluster {cluster.name} has no healthy endpoint "
                f"({len(cluster.endpoints)} known, the rest ejected or unhealthy)"
            )
        if not cluster.breaker.try_acquire_request():
            raise CircuitOpen(f"cluster {cluster.name} is at its limit of requests in flight")
        self.upstream_host = endpoint.key
        pools = pools_of(self.proxy)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            mtls = self.proxy.speaks_mtls(cluster, endpoint)
            async with asyncio.timeout(timeout):
                conn = await pools.acquire(
                    endpoint.address,
                    endpoint.port,
                    cluster.settings.connection_pool.connect_timeout,
                    tls=self.proxy.client_tls() if mtls else None,
                    identity=endpoint.identity if mtls else "",
                )
        except (UpstreamConnectFailed, TimeoutError) as exc:
            cluster.breaker.release_request()
            cluster.outlier.record(endpoint, status=None, failure="connect", now=time.monotonic())
            if isinstance(exc, UpstreamConnectFailed):
                raise
            raise UpstreamConnectFailed(
                f"no HTTP/2 connection to {endpoint.key} within {duration_text(timeout)}"
            ) from None
        if self._gone:
            cluster.breaker.release_request()
            raise ClientGone
        endpoint.request_started(now)
        self._bind(conn, first=attempt == 0)
        try:
            assert self._head is not None
            async with asyncio.timeout_at(deadline):
                block = await self._head
        except TimeoutError:
            self._cancel_upstream()
            self._attempt_failed(cluster, endpoint, "timeout")
            which = "the route's timeout" if overall else "the per-try timeout"
            raise UpstreamTimeout(
                f"{endpoint.key} did not answer within {duration_text(timeout)} ({which})"
            ) from None
        except UpstreamReset:
            self._upstream = None
            self._attempt_failed(cluster, endpoint, "reset")
            raise
        except ClientGone:
            cluster.breaker.release_request()
            endpoint.request_finished(time.monotonic(), 0.0, ok=True)
            raise
        status, headers = parse_response(block)
        return endpoint, status, headers

    def _bind(self, conn: UpstreamHttp2, *, first: bool) -> None:
        """Open the attempt's stream and send the body so far (all of it, on a retry)."""
        loop = asyncio.get_running_loop()
        self._head = loop.create_future()
        self._early = []
        self._unacked = 0
        self._early_end = None
        self._sent_this_attempt = 0
        chunks = list(self._unsent) if first else list(self._replay or ())
        self._unsent.clear()
        if self._block is None:
            self._block = request_block(
                self.method, self.scheme, self.authority(), self.target, self.headers
            )
        block = self._block
        ends_now = self._body_ended and not chunks and self._trailers is None
        self._upstream = conn
        self._upstream_id = conn.open_stream(block, self, end_stream=ends_now)
        for chunk in chunks:
            conn.send_data(self._upstream_id, chunk)
        if self._body_ended and not ends_now:
            conn.end_request(self._upstream_id, self._trailers)

    def authority(self) -> bytes:
        """The authority after the filters (a rewrite may have changed the host); the
        `host` field leaves the headers, since HTTP/2 carries it as `:authority`."""
        authority = b""
        for name, value in self.headers:
            if name == b"host":
                authority = value
        self.headers = [(n, v) for n, v in self.headers if n != b"host"]
        return authority or self.host.encode("latin-1")

    async def _respond(
        self,
        cluster: ClusterRuntime,
        endpoint: EndpointState,
        status: int,
        headers: Fields,
        chain: RuleChain | None,
    ) -> None:
        self.status = status
        if chain is not None:
            for response_filter in chain.response:
                headers = response_filter.on_response(self, headers)  # type: ignore[arg-type]
        if self._gone:
            raise ClientGone
        early_end = self._early_end
        ends_now = early_end is not None and not self._early and early_end[1] is None
        self.response_started = True
        self.downstream.send_response(self, response_block(status, headers), end_stream=ends_now)
        early, self._early = self._early, []
        for chunk in early:
            self.bytes_sent += len(chunk)
            self.downstream.send_data(self.stream_id, chunk)
        ok = True
        try:
            if early_end is not None:
                if not ends_now:
                    self.downstream.end_response(self.stream_id, early_end[1])
            else:
                self._done = asyncio.get_running_loop().create_future()
                await self._done
        except UpstreamReset:
            ok = False
            raise
        except ClientGone:
            raise
        finally:
            self._attempt_over(cluster, endpoint, ok=ok and status < 500, status=status)

    # --- accounting --------------------------------------------------------------------------

    def _attempt_over(
        self, cluster: ClusterRuntime, endpoint: EndpointState, *, ok: bool, status: int
    ) -> None:
        cluster.breaker.release_request()
        now = time.monotonic()
        endpoint.request_finished(now, now - self.started, ok=ok)
        cluster.outlier.record(endpoint, status=status, failure=None, now=now)

    def _attempt_failed(
        self, cluster: ClusterRuntime, endpoint: EndpointState, failure: str
    ) -> None:
        cluster.breaker.release_request()
        now = time.monotonic()
        endpoint.request_finished(now, now - self.started, ok=False)
        cluster.outlier.record(endpoint, status=None, failure=failure, now=now)  # type: ignore[arg-type]

    def _cancel_upstream(self) -> None:
        conn, self._upstream = self._upstream, None
        if conn is not None:
            # Bytes that will never go downstream still hold the endpoint connection's
            # window: give them back, or every cancelled stream would shrink it for good.
            unacked, self._unacked = self._unacked, 0
            conn.acknowledge(self._upstream_id, unacked)
            conn.cancel(self._upstream_id)
