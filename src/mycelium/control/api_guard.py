"""The REST port's guard: every connection passes it before aiohttp reads a byte.

`GuardedConnection` stands between the socket and the protocol aiohttp makes for each
connection. It takes a place in the listener's `ConnectionLimits` or closes the
connection unread, and aborts one whose request head is overdue (`HeadDeadline`).
The app's outermost middleware (`ApiGuard.middleware`) tells it when a head arrived
and when the response to it ended. aiohttp answers an oversized or malformed head
itself (400) and reports it to the logger it was given: `ApiGuard.parser_log`, which
counts it. Every refusal goes to the listener's `RefusalLog`.

`GuardedSite` is the aiohttp site that listens with the guard in front: aiohttp's own
sites hand each connection to its protocol directly. The guard's callbacks never
await; its one timer per connection is cancelled explicitly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from mycelium.control.api_limits import HeadDeadline
from mycelium.control.connection_limits import ConnectionLimits
from mycelium.control.refusals import RefusalLog

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiGuard:
    """One listener's places, refusals and live connections."""

    def __init__(
        self,
        limits: ConnectionLimits,
        refusals: RefusalLog,
        *,
        head_seconds: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.limits = limits
        self.refusals = refusals
        self.head_seconds = head_seconds
        self._loop = loop
        # By transport: a request knows its transport, and so finds its connection.
        self.connections: dict[asyncio.BaseTransport, GuardedConnection] = {}
        self.parser_log = _ParserRefusals(self)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def protocol_factory(
        self, inner: Callable[[], asyncio.Protocol]
    ) -> Callable[[], GuardedConnection]:
        """For `loop.create_server`: each connection guarded, `inner` made only for
        those let in."""
        return lambda: GuardedConnection(self, inner)

    def refuse(self, reason: str, peer: str, detail: str) -> None:
        self.refusals.refuse(reason, peer, detail, self.loop.time())

    def middleware(self) -> Middleware:
        """The app's outermost middleware: tells each connection that its head arrived
        and when its response ended."""

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            assert request.transport is not None  # a request being handled has one
            connection = self.connections.get(request.transport)
            if connection is None:  # not through a GuardedSite (a test's own runner)
                return await handler(request)
            connection.head_received()
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # a response too (aiohttp writes it)
                connection.response_ended(keep_alive=_ends_kept_alive(request, exc))
                raise
            except BaseException:
                # aiohttp answers 500 (or 504) and closes; or the client left.
                connection.response_ended(keep_alive=False)
                raise
            connection.response_ended(keep_alive=_ends_kept_alive(request, response))
            return response

        return guard


def _ends_kept_alive(request: web.Request, response: web.StreamResponse) -> bool:
    """Whether the connection stays open after `response`. Not while the request's body
    is still arriving: the handler did not want it (a refusal, a route that takes
    none), and the next request cannot start before it ends. aiohttp drops what comes
    for a while (LINGER_SECONDS) so the client can read its answer, then closes."""
    if not request.content.is_eof():
        response.force_close()
    if response.keep_alive is not None:  # set by prepare() or force_close()
        return response.keep_alive
    return request.keep_alive  # what prepare() will decide


class GuardedConnection(asyncio.Protocol):
    """One connection on the REST port, in front of aiohttp's protocol for it."""

    def __init__(self, guard: ApiGuard, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = make_inner
        self._loop = guard.loop
        # Set once the connection is let in; a refused one never has them.
        self._transport: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._deadline: HeadDeadline | None = None
        self._address = "?"
        # The head deadline's timer, while a head is awaited.
        self._timer: asyncio.TimerHandle | None = None

    # --- from the transport -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._address = str(peer[0]) if peer else "?"
        limits = self._guard.limits
        refusal = limits.try_open(self._address)
        if refusal is not None:
            # Closed unread: a connection over a cap costs no parser and no buffer.
            self._guard.refuse(
                refusal,
                self._address,
                f"{limits.open} connections open ({limits.held_by(self._address)} from "
                f"this address); the caps are {limits.total} and {limits.per_address} "
                "per address",
            )
            transport.abort()
            return
        self._transport = transport
        self._deadline = HeadDeadline(self._guard.head_seconds, self._loop.time())
        self._arm()
        self._guard.connections[transport] = self
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None or self._deadline is None:
            return  # refused, and aborted: nothing of it is read
        if self._deadline.data_received(self._loop.time()):
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None or self._transport is None:
            return  # refused: it held no place
        self._cancel_timer()
        self._guard.limits.close(self._address)
        self._guard.connections.pop(self._transport, None)
        self._inner.connection_lost(exc)

    # --- from the middleware ------------------------------------------------------------

    def head_received(self) -> None:
        if self._deadline is not None:
            self._deadline.head_received()
        self._cancel_timer()

    def response_ended(self, *, keep_alive: bool) -> None:
        if self._deadline is not None:
            self._deadline.response_ended(keep_alive=keep_alive)
        self._cancel_timer()

    # --- the head deadline --------------------------------------------------------------

    def _arm(self) -> None:
        self._cancel_timer()
        if self._deadline is not None and self._deadline.due is not None:
            self._timer = self._loop.call_at(self._deadline.due, self._head_overdue)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_overdue(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._transport is None:
            return
        if not deadline.overdue(self._loop.time()):
            self._arm()  # the loop's clock woke us a hair early
            return
        self._guard.refuse(
            "head_timeout",
            self._address,
            f"no whole request head within {deadline.seconds:g} s",
        )
        # Abort, not close: nothing it is owed is pending, and close() would wait for
        # a client that does not read.
        self._transport.abort()


class _ParserRefusals(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's protocol reports to. A head its parser refused (a line over
    MAX_REQUEST_LINE_BYTES, more than MAX_HEADERS, not HTTP at all) is the client's
    doing: counted and logged as a refusal, without a traceback per flooded request.
    Anything else goes to aiohttp's logger as before."""

    def __init__(self, guard: ApiGuard) -> None:
        super().__init__(logging.getLogger("aiohttp.server"))
        self._guard = guard

    def log(  # type: ignore[override]  # the keywords aiohttp passes, spelled out
        self,
        level: int,
        msg: object,
        *args: object,
        exc_info: object = None,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if isinstance(exc_info, HttpProcessingError):
            # aiohttp's message is "Error handling request from %s", the peer.
            peer = str(args[0]) if args else "?"
            self._guard.refuse("bad_head", peer, f"{type(exc_info).__name__}: {exc_info.message}")
            return
        super().log(
            level,
            msg,
            *args,
            exc_info=exc_info,  # type: ignore[arg-type]
            stack_info=stack_info,
            stacklevel=stacklevel,
            extra=extra,
        )


class GuardedSite(web.BaseSite):
    """aiohttp's TCP site, with `guard` in front of every connection."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ApiGuard) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        self._server = await self._guard.loop.create_server(
            self._guard.protocol_factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
