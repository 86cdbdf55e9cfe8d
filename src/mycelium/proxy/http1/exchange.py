"""One HTTP/1.1 request/response exchange: the router's HTTP/1.1 leg.

The router (`proxy.router`) decides: the listener's role plans the request (its
destination, rule, filters and backend, or its admission to the local app) and
`router.forward` attempts, times out and retries. This module supplies what is HTTP/1.1
about it: how an attempt is written to a pooled upstream connection and its response
head awaited, and how the response goes back to the client. The response body is then
streamed by the connections themselves (upstream → downstream) under their flow
control, without passing through here.

Two paths, one behaviour. The common request is planned and sent synchronously inside
the downstream's read callback, and its response head handled in the upstream's (`start`,
no task): the role's `plan_now` and the same retry policy decide, so nothing is decided
twice. Whatever must wait (an on-demand subscription, a delay fault, a mirror, a new
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
from typing import TYPE_CHECKING, Any, Protocol

from mycelium.proxy.destination import duration_text
from mycelium.proxy.errors import (
    ClientGone,
    ProxyError,
    UpstreamConnectFailed,
    UpstreamProtocolViolation,
    UpstreamReset,
    UpstreamTimeout,
)
from mycelium.proxy.http1.mirror import mirror_http1
from mycelium.proxy.http1.over_http2 import Http1OverHttp2
from mycelium.proxy.protocols.headers import strip_hop_by_hop
from mycelium.proxy.protocols.http1 import (
    FRAMING_HEADERS,
    NO_BODY_STATUSES,
    RequestReceived,
    ResponseReceived,
    encode_chunk,
    encode_last_chunk,
    encode_request_head,
    encode_response_head,
)
from mycelium.proxy.router.attempts import (
    AttemptFailure,
    attempt_abandoned,
    attempt_failed,
    attempt_over,
    awaiting_head,
    circuit_open,
    connect_failed,
    no_healthy_endpoint,
    pick_endpoint,
)
from mycelium.proxy.router.forward import forward, route_timeout
from mycelium.proxy.router.request import Client, Planner, ProxiedRequest
from mycelium.proxy.router.retries import retry_allowed, status_error
from mycelium.proxy.routing import DEFAULT_TIMEOUT_SECONDS, RequestFacts
from mycelium.proxy.upstream.hash_key import request_hash_key

if TYPE_CHECKING:
    from mycelium.proxy.filters.chain import RuleChain
    from mycelium.proxy.http1.body import BodyStream
    from mycelium.proxy.router.engine import Http1Engine
    from mycelium.proxy.router.forward import UpstreamLeg
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.endpoint import EndpointState
    from mycelium.proxy.upstream.http1_pool import UpstreamHttp1

# Response framings whose head goes to the client as received, when it is `forwardable`.
_FORWARDED_FRAMINGS = frozenset({"length", "chunked"})


class Http1Client(Client, Protocol):
    """What an exchange asks of its client's connection (`DownstreamHttp1`)."""

    def start_response(  # noqa: PLR0917 - positional on purpose: once per request, hot
        self,
        exchange: Exchange,
        response: ResponseReceived,
        headers: list[tuple[bytes, bytes]],
        upstream: UpstreamHttp1,
        raw_head: bytes | None = None,
        hold_head: bool = False,
    ) -> None:
        """Send the response head on, then stream its body from `upstream`."""

    def switch_protocols(self, head: bytes, upstream: UpstreamHttp1) -> bool:
        """Write a 101 `head`, then relay bytes with `upstream` (False: a side is gone)."""

    def local_reply(self, exchange: Exchange, error: ProxyError) -> None: ...

    def abort(self) -> None: ...

    def exchange_done(self, exchange: Exchange, ended: float) -> None:
        """`exchange` ended at `ended` (a time.monotonic()): the connection may go on."""


class Http1Answer:
    """An attempt's response head, with the connection and endpoint it came from."""

    __slots__ = ("conn", "endpoint", "response", "status")

    def __init__(
        self, conn: UpstreamHttp1, endpoint: EndpointState, response: ResponseReceived
    ) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self.response = response
        self.status = response.status


class Exchange(ProxiedRequest):
    __slots__ = (  # the private ones are the synchronous path's state (see `start`)
        "_conn",
        "_done",
        "_endpoint",
        "_finished",
        "_picked",
        "_sent_at",
        "_task",
        "_timer",
        "body",
        "deadline",
        "head",
    )
    protocol = "HTTP/1.1"
    proxy: Http1Engine
    downstream: Http1Client

    def __init__(
        self,
        proxy: Http1Engine,
        downstream: Http1Client,
        head: RequestReceived,
        body: BodyStream | None,
        role: Planner,
    ) -> None:
        super().__init__(proxy, downstream, role, head.method, head.target, head.headers, head.host)
        self.head = head
        self.body = body
        self.deadline = 0.0  # when the core's sweep times the response head out (0: never)
        self._done: asyncio.Future[None] | None = None  # the async path awaits the response
        self._finished = False
        self._conn: UpstreamHttp1 | None = None  # the attempt awaiting its response head
        self._endpoint: EndpointState | None = None
        self._picked: EndpointState | None = None  # where the async path's next attempt goes
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
                    if self.role.plan_now(self, self.proxy):
                        self._send_now()
                        return
                except Exception as exc:  # a bug must cost one request, no more
                    self._failed(exc)
                    self._finish()
                    return
        self._task = self.proxy.spawn(self.run())

    async def run(self) -> None:
        """The asynchronous path: plan, wait where a rule says so, forward, retry."""
        try:
            await self.role.plan(self, self.proxy)
            await self._forward()
        except Exception as exc:  # a bug must cost one request, not the connection's others
            self._failed(exc)
        finally:
            self._finish()

    async def _forward_planned(self) -> None:
        """The asynchronous path for a request planned synchronously."""
        try:
            self.trace()
            await self._forward()
        except Exception as exc:  # a bug must cost one request, no more
            self._failed(exc)
        finally:
            self._finish()

    async def _forward(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        rule = self.rule
        upgrade = self.head.upgrade is not None
        # An upgrade is never retried: its connection becomes the client's own stream.
        policy = rule.rule.retries if rule is not None and not upgrade else None
        # A cluster whose port speaks HTTP/2 gets the request as a stream (an upgrade
        # stays HTTP/1.1: its connection becomes a byte pipe).
        leg: UpstreamLeg[Any] = Http1OverHttp2(self) if cluster.http2 and not upgrade else self
        await forward(leg, cluster, policy, route_timeout(rule), self.proxy.rng)

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
            cluster, endpoint = self.cluster, self._endpoint
            if cluster is not None and endpoint is not None:
                attempt_abandoned(cluster, endpoint, self.started)
            self._finish()
        elif self._task is not None:
            self._task.cancel()  # `attempt` lets go of its connection; `run` finishes us

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

    def _finish(self, ended: float = 0.0) -> None:
        """The request ended (at `ended`, when the caller has just read the clock)."""
        if not self._finished:
            self._finished = True
            ended = ended or time.monotonic()
            body = self.body
            self.report(body.total if body is not None else 0, ended)
            self.downstream.exchange_done(self, ended)

    # --- what the role asks of the request ---------------------------------------------------

    def request_facts(self) -> RequestFacts:
        """The request as route matching sees it. An absolute-form target (HTTP_PROXY
        clients: http://host[:port]/path) becomes origin-form, its authority the Host."""
        target = self.target
        if target[:1] == b"/":
            facts = RequestFacts.from_fields(
                self.method.decode("latin-1"), target.decode("latin-1"), self.headers
            )
            self.host = self.host_value.decode("latin-1")
            self.facts = facts
            return facts
        host = ""
        folded: dict[str, str] = {}
        for name, value in self.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            folded[key] = f"{folded[key]},{text}" if key in folded else text
            if name == b"host":
                host = text
        text_target = target.decode("latin-1")
        _, sep, rest = text_target.partition("://")
        if sep:
            authority, slash, path = rest.partition("/")
            host = authority or host
            text_target = slash + path if slash else "/"
            self.target = text_target.encode("latin-1")
            self.headers = [(n, v) for n, v in self.headers if n != b"host"]
            self.headers.append((b"host", host.encode("latin-1")))
            folded["host"] = host
        self.host = host
        facts = RequestFacts.from_target(self.method.decode("latin-1"), text_target, folded)
        self.facts = facts
        return facts

    def mirror(self, cluster: ClusterRuntime) -> None:
        mirror_http1(self.proxy, cluster, (self.method, self.target, self.headers), self.body)

    # --- the synchronous path ----------------------------------------------------------------
    #
    # The common request (origin-form, its body complete, a rule with no delay or mirror,
    # an idle pooled connection to the endpoint) is planned inside the downstream's read
    # callback and written upstream at once; the response head comes back in a callback
    # from the upstream connection. No task, future or timeout context is made for it:
    # a rule's timeout is one `call_at` handle, the default one the core's sweep. Anything
    # else hands over to the asynchronous path, which continues from where this one stood.

    def _send_now(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        if cluster.http2:  # the request goes as a stream, over a connection of its own
            self._task = self.proxy.spawn(self._forward_planned())
            return
        rule = self.rule
        tracer = self.proxy.tracer  # `trace`, inlined: the common request has no tracer
        if tracer is not None:
            tracer.begin(self)
        # planned inside the callback that read the request head: `started` is now
        now = self.started
        self._sent_at = now
        hashed = cluster.settings.consistent_hash is not None
        endpoint = cluster.pick(now, self._hash_key(cluster) if hashed else None)
        if endpoint is None:
            raise no_healthy_endpoint(cluster)
        conn = self.proxy.pool_for(cluster, endpoint).take_idle()
        if conn is None:
            # Connecting is the async path's work; it goes to the endpoint picked here,
            # so that the balancer's choices are not spent twice.
            self._task = self.proxy.spawn(self._continue(0, None, endpoint))
            return
        cluster.retry_budget.record_request(now)
        if not cluster.breaker.try_acquire_request():
            conn.pool.release(conn)
            raise circuit_open(cluster)
        self.upstream_host = endpoint.key
        endpoint.request_started(now)
        self._endpoint = endpoint
        self._conn = conn
        self.proxy.requests_sync += 1
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
        cluster = self.cluster
        endpoint = self._endpoint
        assert cluster is not None
        assert endpoint is not None
        if response.status == 101:  # the synchronous path never sends an upgrade
            conn.abort()
            self._sync_attempt_failed(_unasked_switch(endpoint), "reset")
            return
        try:
            policy = self.rule.rule.retries if self.rule is not None else None
            if (
                policy is not None
                and policy.attempts > 0
                and retry_allowed(policy, self.method, True, status=response.status)
            ):
                attempt_over(cluster, endpoint, self.started, response.status, ok=False)
                conn.abort()  # its body is not wanted; a fresh connection is cheaper
                self.proxy.counters["sync_retries_handed_over"] += 1
                self._task = self.proxy.spawn(self._continue(1, status_error(response.status)))
                return
            self.status = response.status
            headers, raw = self._response_head(response, self.chain)
            self.response_started = True
            self.downstream.start_response(self, response, headers, conn, raw, True)
        except Exception as exc:  # a bug must cost one request, no more
            self._failed(exc)
            self._finish()

    def upstream_failed(self, conn: UpstreamHttp1, exc: BaseException) -> None:
        """The synchronous attempt's connection failed before a response head."""
        self._disarm()
        self._conn = None
        self._sync_attempt_failed(exc, "reset")

    def timed_out(self) -> None:
        """The synchronous attempt's response head is overdue (a timer, or the sweep)."""
        conn = self._conn
        self._disarm()
        if conn is None or self._finished:
            return
        self._conn = None
        conn.detach_listener()
        conn.abort()
        rule = self.rule.rule if self.rule is not None else None
        policy = rule.retries if rule is not None else None
        per_try = policy.per_try_timeout if policy is not None else None
        overall = (rule.timeout if rule is not None else None) or DEFAULT_TIMEOUT_SECONDS
        limit = min(per_try or math.inf, overall)
        which = "the route's timeout" if limit == overall else "the per-try timeout"
        key = self._endpoint.key if self._endpoint is not None else "the upstream"
        self._sync_attempt_failed(
            UpstreamTimeout(f"{key} did not answer within {duration_text(limit)} ({which})"),
            "timeout",
        )

    def _sync_attempt_failed(self, exc: BaseException, failure: AttemptFailure) -> None:
        cluster = self.cluster
        endpoint = self._endpoint
        assert cluster is not None
        assert endpoint is not None
        attempt_failed(cluster, endpoint, self.started, failure)
        policy = self.rule.rule.retries if self.rule is not None else None
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

    def stream_response(
        self, response: ResponseReceived, headers: list[tuple[bytes, bytes]], source: Any
    ) -> None:
        """Send `response`'s head to the client with `headers`; its body then flows from
        `source`, which behaves as an upstream HTTP/1.1 connection would."""
        self.downstream.start_response(self, response, headers, source)

    def awaiting_response(self) -> asyncio.Future[None]:
        """The future the asynchronous path awaits while the response body streams;
        `response_over` settles it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done = done
        return done

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
        cluster = self.cluster
        endpoint = self._endpoint
        now = time.monotonic()
        if cluster is not None and endpoint is not None:
            # `attempts.attempt_over`, inlined: once per request on the synchronous path
            cluster.breaker.release_request()
            status = self.status
            endpoint.request_finished(now, now - self.started, ok=status < 500)
            cluster.outlier.record(endpoint, status=status, failure=None, now=now)
        if exc is not None:
            self._failed(exc)
        self._finish(now)

    async def _continue(
        self, attempt: int, last_error: ProxyError | None, endpoint: EndpointState | None = None
    ) -> None:
        """The asynchronous path from `attempt` on, after the synchronous one handed over
        (`endpoint`: where its next attempt goes, if the synchronous path picked it)."""
        cluster = self.cluster
        rule = self.rule
        assert cluster is not None
        try:
            timeout = route_timeout(rule)
            spent = time.monotonic() - self._sent_at
            deadline = asyncio.get_running_loop().time() + timeout - spent
            self._picked = endpoint
            await forward(
                self,
                cluster,
                rule.rule.retries if rule is not None else None,
                timeout,
                self.proxy.rng,
                first=attempt,
                last_error=last_error,
                deadline=deadline,
            )
        except Exception as exc:  # a bug must cost one request, no more
            self._failed(exc)
        finally:
            self._finish()

    # --- the router's leg: attempts over HTTP/1.1 ----------------------------------------------

    def replayable(self, error: ProxyError | None) -> bool:
        body = self.body
        return body is None or body.replay() is not None

    async def attempt(
        self, cluster: ClusterRuntime, number: int, timeout: float, *, stated: str
    ) -> Http1Answer:
        now = time.monotonic()
        picked, self._picked = self._picked, None
        if picked is not None:
            endpoint = picked
            if not cluster.breaker.try_acquire_request():
                raise circuit_open(cluster)
        else:
            endpoint = pick_endpoint(cluster, now, self._hash_key(cluster))
        self.upstream_host = endpoint.key
        pool = self.proxy.pool_for(cluster, endpoint)
        connect_timeout = cluster.settings.connection_pool.connect_timeout
        upgrade = self.head.upgrade is not None
        try:
            conn = await (pool.connect if upgrade else pool.acquire)(connect_timeout)
        except UpstreamConnectFailed:
            connect_failed(cluster, endpoint)
            raise
        endpoint.request_started(now)
        head = encode_request_head(self.method, self.target, self._upstream_headers())
        waiter = conn.begin(self.method, head)
        body = self.body
        replay = body.replay() if body is not None else []
        # The client leaving (`client_left`, or its body ending with the connection)
        # cancels this: nobody wants the answer, and the endpoint did nothing wrong.
        with awaiting_head(cluster, endpoint, self.started, stated, give_up=conn.abort):
            async with asyncio.timeout(timeout):
                await self._send_body(conn, replay)
                response = await waiter
        self.response_head_at = time.monotonic()
        if response.status == 101 and not upgrade:
            conn.abort()
            attempt_failed(cluster, endpoint, self.started, "reset")
            raise _unasked_switch(endpoint)
        return Http1Answer(conn, endpoint, response)

    def discard(self, cluster: ClusterRuntime, answer: Http1Answer) -> None:
        attempt_over(cluster, answer.endpoint, self.started, answer.status, ok=False)
        answer.conn.abort()  # its body is not wanted; a fresh connection is cheaper than draining

    async def respond(self, cluster: ClusterRuntime, answer: Http1Answer) -> None:
        conn, endpoint, response = answer.conn, answer.endpoint, answer.response
        if response.upgrade:
            self._switch(conn, endpoint, cluster, response)
            return
        self.status = response.status
        headers, raw = self._response_head(response, self.chain)
        self.response_started = True
        done = self.awaiting_response()  # before the head goes: the body may end meanwhile
        self.downstream.start_response(self, response, headers, conn, raw_head=raw)
        try:
            await done
        finally:
            attempt_over(cluster, endpoint, self.started, response.status, ok=response.status < 500)

    def _switch(
        self,
        conn: UpstreamHttp1,
        endpoint: EndpointState,
        cluster: ClusterRuntime,
        response: ResponseReceived,
    ) -> None:
        """The upstream accepted the upgrade: send its 101 on and become a byte pipe.
        For the exchange, the request ends here; the relay lives on by itself."""
        self.status = response.status
        headers = strip_hop_by_hop(response.headers, keep_upgrade=True)
        chain = self.chain
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
            attempt_over(cluster, endpoint, self.started, response.status, ok=True)
        if not switched:
            conn.abort()
            raise UpstreamReset("a connection ended while switching protocols")

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


def _unasked_switch(endpoint: EndpointState) -> UpstreamProtocolViolation:
    return UpstreamProtocolViolation(
        f"{endpoint.key} answered 101 Switching Protocols to a request that did not ask to "
        "upgrade; check the upstream application"
    )
