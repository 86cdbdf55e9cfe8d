"""One HTTP/2 stream through the proxy: the router's HTTP/2 leg.

The router (`proxy.router`) decides, as it does for HTTP/1.1: the listener's role plans
the stream (destination, rule, filters, backend; or admission to the local app) and
`router.forward` attempts, times out and retries. This module supplies what is HTTP/2
about it: an attempt is a stream on a pooled upstream connection, a gRPC client's
`grpc-timeout` caps the route's, and retries happen only before any response byte went
downstream and while the request body is still held whole (`REPLAY_LIMIT_BYTES`); gRPC
calls are POSTs, so only connect failures retry them.

Flow control runs end to end: request bytes are acknowledged to the client when the
upstream connection takes them, response bytes to the endpoint when the downstream
connection takes them. Nothing in between grows without a window to match.

A finished stream becomes a `FinishedRequest` for telemetry, as an HTTP/1.1 exchange
does; `h2_streams` counts streams alone. A rule's mirror copies the stream over HTTP/2
once its body is whole (`whole_body`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from h2.errors import ErrorCodes

from mycelium.proxy.errors import (
    ClientGone,
    ProxyError,
    UpstreamConnectFailed,
    UpstreamReset,
    UpstreamUnprocessed,
)
from mycelium.proxy.http2.mirror import mirror_http2
from mycelium.proxy.http2.over_http1 import Http1Attempt, request_head
from mycelium.proxy.protocols.grpc_messages import GrpcMessageCounter
from mycelium.proxy.protocols.headers import trailers_to_forward
from mycelium.proxy.protocols.http2 import (
    REPLAY_LIMIT_BYTES,
    Fields,
    Http2Request,
    grpc_status_for,
    grpc_timeout,
    parse_response,
    request_block,
    response_block,
    take_authority,
)
from mycelium.proxy.router.attempts import (
    attempt_over,
    awaiting_head,
    endpoint_for,
)
from mycelium.proxy.router.connections import upstream_connection
from mycelium.proxy.router.forward import HeadAnswer, forward, route_timeout
from mycelium.proxy.router.request import Client, Planner, ProxiedRequest
from mycelium.proxy.routing import RequestFacts
from mycelium.proxy.upstream.http1_pool import UpstreamHttp1

if TYPE_CHECKING:
    from mycelium.proxy.router.engine import Engine
    from mycelium.proxy.upstream.clusters import ClusterRuntime
    from mycelium.proxy.upstream.http2_pool import UpstreamHttp2


class Http2Client(Client, Protocol):
    """What a stream asks of its client's connection (`DownstreamHttp2`)."""

    def send_response(
        self, exchange: Http2Exchange, block: Fields, *, end_stream: bool
    ) -> None: ...

    def send_data(self, stream_id: int, data: bytes) -> None: ...

    def end_response(self, stream_id: int, trailers: Fields | None) -> None: ...

    def acknowledge(self, stream_id: int, size: int) -> None: ...

    def reset_stream(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None: ...

    def local_reply(self, exchange: Http2Exchange, error: ProxyError) -> int:
        """Answer the stream ourselves; the bytes of body sent."""
        ...

    def stream_done(self, exchange: Http2Exchange) -> None: ...


class StreamBinding(Protocol):
    """Where an attempt's request goes: a stream on an HTTP/2 connection, or a request
    on an HTTP/1.1 one (`over_http1.Http1Attempt`)."""

    @property
    def closed(self) -> bool: ...

    def send_data(self, data: bytes) -> None: ...

    def end_request(self, trailers: Fields | None) -> None: ...

    def acknowledge(self, size: int) -> None:
        """The client took `size` of the response's bytes: the endpoint may send more."""
        ...

    def cancel(self) -> None: ...


class _Http2Stream:
    """A stream on an upstream HTTP/2 connection, as a binding."""

    __slots__ = ("conn", "stream_id")

    def __init__(self, conn: UpstreamHttp2, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def send_data(self, data: bytes) -> None:
        self.conn.send_data(self.stream_id, data)

    def end_request(self, trailers: Fields | None) -> None:
        self.conn.end_request(self.stream_id, trailers)

    def acknowledge(self, size: int) -> None:
        self.conn.acknowledge(self.stream_id, size)

    def cancel(self) -> None:
        self.conn.cancel(self.stream_id)


# A stream the endpoint never processed is sent again on a fresh connection at most this
# often (an endpoint that refuses everything must not be hammered).
MAX_UNPROCESSED_REPEATS = 3


class Http2Exchange(ProxiedRequest):
    __slots__ = (
        "__dict__",  # the rest of its state: a stream is less common than a request
    )
    protocol = "HTTP/2"
    proxy: Engine
    downstream: Http2Client

    def __init__(
        self,
        proxy: Engine,
        downstream: Http2Client,
        stream_id: int,
        request: Http2Request,
        role: Planner,
    ) -> None:
        # The authority travels as a `host` field while filters run.
        headers: Fields = [*request.headers, (b"host", request.authority)]
        super().__init__(
            proxy, downstream, role, request.method, request.path, headers, request.authority
        )
        self.stream_id = stream_id
        self.grpc = request.is_grpc
        self.grpc_status = ""
        # Istio's message counters, for gRPC only: counting costs a pass over the body
        self._messages_in = GrpcMessageCounter() if self.grpc else None
        self._messages_out = GrpcMessageCounter() if self.grpc else None
        self.scheme = request.scheme
        self.host = request.authority.decode("latin-1")
        self.received = 0  # request body bytes from the client
        # request body, from the client
        self._unsent: deque[bytes] = deque()  # arrived while no attempt was bound
        self._replay: list[bytes] | None = []  # the whole body, while small enough
        self._replay_size = 0
        self._body_ended = False
        self._trailers: Fields | None = None
        self._acked = 0  # body bytes acknowledged to the client
        self._sent_this_attempt = 0
        # the current attempt
        self._binding: StreamBinding | None = None  # where the attempt's request goes
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
            await self.role.plan(self, proxy)
            cluster = self.cluster
            assert cluster is not None
            rule = self.rule
            timeout = route_timeout(rule)
            client_deadline = grpc_timeout(self.headers) if self.grpc else None
            if client_deadline is not None:
                timeout = min(timeout, client_deadline)
            policy = rule.rule.retries if rule is not None else None
            await forward(self, cluster, policy, timeout, proxy.rng)
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
            self.report(self.received, time.monotonic())
            self.downstream.stream_done(self)

    @property
    def bytes_received(self) -> int:
        return self.received

    def grpc_messages(self) -> tuple[int, int]:
        inbound, outbound = self._messages_in, self._messages_out
        if inbound is None or outbound is None:
            return (0, 0)
        return (inbound.count, outbound.count)

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
        self.received += len(data)
        if self._messages_in is not None:
            self._messages_in.feed(data)
        if self._replay is not None:
            if self._replay_size + len(data) <= REPLAY_LIMIT_BYTES:
                self._replay.append(data)
                self._replay_size += len(data)
            else:
                self._replay = None  # too large to keep: this request will not be retried
        binding = self._binding
        if binding is not None and not binding.closed:
            binding.send_data(data)
        else:
            self._unsent.append(data)

    def request_trailers(self, block: Fields) -> None:
        self._trailers = block

    def request_end(self) -> None:
        self._body_ended = True
        self._wake_body_waiter()
        binding = self._binding
        if binding is not None and not binding.closed:
            binding.end_request(self._trailers)

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
        if self._messages_out is not None:
            self._messages_out.feed(data)
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
        if self._binding is not None:
            self._binding.acknowledge(size)

    # --- what the role asks of the stream ---------------------------------------------------

    def request_facts(self) -> RequestFacts:
        facts = RequestFacts.from_fields(
            self.method.decode("latin-1"), self.target.decode("latin-1"), self.headers
        )
        self.facts = facts
        return facts

    def mirror(self, cluster: ClusterRuntime) -> None:
        head = (self.method, self.scheme, self.authority(), self.target, self.headers)
        mirror_http2(self.proxy, cluster, head, self.whole_body)

    # --- the router's leg: attempts as streams -------------------------------------------------

    def replayable(self, error: ProxyError | None) -> bool:
        return self._replay is not None or isinstance(error, UpstreamConnectFailed)

    async def attempt(
        self, cluster: ClusterRuntime, number: int, timeout: float, *, stated: str
    ) -> HeadAnswer:
        return await self._attempt_unless_refused(cluster, number, timeout, stated)

    def discard(self, cluster: ClusterRuntime, answer: HeadAnswer) -> None:
        attempt_over(cluster, answer.endpoint, self.started, answer.status, ok=False)
        self._cancel_upstream()

    async def _attempt_unless_refused(
        self, cluster: ClusterRuntime, attempt: int, timeout: float, stated: str
    ) -> HeadAnswer:
        """An attempt, repeated at once when the endpoint says it never processed it
        (a graceful GOAWAY, as nginx sends every keepalive_requests streams, or
        REFUSED_STREAM): that costs no retry and needs no retry policy, only the body."""
        refusals = 0
        while True:
            try:
                return await self._attempt(cluster, attempt, timeout, stated)
            except UpstreamUnprocessed:
                refusals += 1
                if refusals > MAX_UNPROCESSED_REPEATS or self._replay is None:
                    raise

    async def _attempt(
        self, cluster: ClusterRuntime, attempt: int, timeout: float, stated: str
    ) -> HeadAnswer:
        now = time.monotonic()
        endpoint = endpoint_for(cluster, now, self.headers, self.peer_host)
        self.upstream_host = endpoint.key
        deadline = asyncio.get_running_loop().time() + timeout
        conn = await upstream_connection(self.proxy, cluster, endpoint, timeout)
        if self._gone:
            cluster.breaker.release_request()
            if isinstance(conn, UpstreamHttp1):
                conn.pool.release(conn)
            raise ClientGone
        endpoint.request_started(now)
        if isinstance(conn, UpstreamHttp1):
            self._bind_http1(conn, first=attempt == 0)
        else:
            self._bind(conn, first=attempt == 0)
        assert self._head is not None
        with awaiting_head(
            cluster, endpoint, self.started, stated, give_up=self._cancel_upstream, lost=self._lost
        ):
            async with asyncio.timeout_at(deadline):
                block = await self._head
        status, headers = parse_response(block)
        return HeadAnswer(endpoint, status, headers)

    def _prepare(self, *, first: bool) -> list[bytes]:
        """A fresh attempt's state; the body chunks it starts with (all of it, on a
        retry)."""
        self._head = asyncio.get_running_loop().create_future()
        self._early = []
        self._unacked = 0
        self._early_end = None
        self._sent_this_attempt = 0
        chunks = list(self._unsent) if first else list(self._replay or ())
        self._unsent.clear()
        return chunks

    def _bind(self, conn: UpstreamHttp2, *, first: bool) -> None:
        """Open the attempt's stream and send the body so far."""
        chunks = self._prepare(first=first)
        if self._block is None:
            self._block = request_block(
                self.method, self.scheme, self.authority(), self.target, self.headers
            )
        ends_now = self._body_ended and not chunks and self._trailers is None
        block = self._block + conn.introduction if conn.introduction else self._block
        binding = self._binding = _Http2Stream(
            conn, conn.open_stream(block, self, end_stream=ends_now)
        )
        for chunk in chunks:
            binding.send_data(chunk)
        if self._body_ended and not ends_now:
            binding.end_request(self._trailers)

    def _bind_http1(self, conn: UpstreamHttp1, *, first: bool) -> None:
        """Send the attempt as an HTTP/1.1 request, with the body so far: framed by its
        length when the stream's body has ended, in chunks while it may still grow."""
        chunks = self._prepare(first=first)
        whole = self._body_ended and self._trailers is None
        size = sum(len(c) for c in chunks)
        bodiless = whole and not size and self.method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS")
        attempt = Http1Attempt(self, conn, chunked=not whole)
        head = request_head(
            self.method,
            self.target,
            self.headers,
            length=None if bodiless else size,
            chunked=not whole,
        )
        attempt.begin(self.method, head)
        self._binding = attempt
        for chunk in chunks:
            attempt.send_data(chunk)
        if self._body_ended:
            attempt.end_request(self._trailers)

    def authority(self) -> bytes:
        """The authority after the filters (a rewrite may have changed the host); the
        `host` field leaves the headers, since HTTP/2 carries it as `:authority`."""
        authority, self.headers = take_authority(self.headers, self.host.encode("latin-1"))
        return authority

    async def respond(self, cluster: ClusterRuntime, answer: HeadAnswer) -> None:
        endpoint, status, headers = answer.endpoint, answer.status, answer.headers
        self.status = status
        chain = self.chain
        if chain is not None:
            for response_filter in chain.response:
                headers = response_filter.on_response(self, headers)
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
        finally:
            attempt_over(cluster, endpoint, self.started, status, ok=ok and status < 500)

    def _lost(self) -> None:
        self._binding = None  # the endpoint reset it: nothing to cancel

    def _cancel_upstream(self) -> None:
        binding, self._binding = self._binding, None
        if binding is not None:
            # Bytes that will never go downstream still hold the endpoint connection's
            # window: give them back, or every cancelled stream would shrink it for good.
            unacked, self._unacked = self._unacked, 0
            binding.acknowledge(unacked)
            binding.cancel()
