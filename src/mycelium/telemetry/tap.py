"""Tap, the proxy's half: report finished requests that match a filter, live.

The controller starts a tap on a proxy over its discovery stream (`TapStart`: an id, a
filter, a maximum, a duration, a rate) and the proxy answers with batches of events
(`TapEvents`) on the same stream until the tap ends: its maximum reached, its time up,
a `TapStop`, or the stream gone (then there is nobody to tell). See docs/tap.md.

Costs, since `request_finished` runs once per request on the hot path:
- no tap active: one attribute check, nothing built;
- a tap active: the filter (a few comparisons) per request; an event is built only for
  a match that the tap's rate admits, once however many taps match;
- events leave in batches, at most every `FLUSH_SECONDS` (or at `BATCH_EVENTS`), never
  a write per request. A match over the rate is counted (`dropped`), not kept.

`matches` is the filter, sans-IO; `Tap` is the observer and owns the timers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mycelium.discovery import protocol as p
from mycelium.telemetry.response_flags import response_flags
from mycelium.token_bucket import TokenBucket

if TYPE_CHECKING:
    from mycelium.telemetry import FinishedRequest
    from mycelium.telemetry.metrics import EndpointView

    # finds an upstream endpoint by cluster name and `address:port`, as the metrics do
    type EndpointLookup = Callable[[str, str], EndpointView | None]

log = logging.getLogger(__name__)

# A batch leaves this long after its first event at the latest: live enough for a
# person watching, and one write per batch rather than per request.
FLUSH_SECONDS = 0.1
# ...or as soon as it holds this many events (a frame of some 30 KiB).
BATCH_EVENTS = 100
# More taps than this at once on one proxy is a runaway client, not an operator.
MAX_TAPS = 16


def matches(
    tap_filter: p.TapFilter,
    *,
    direction: str,
    method: bytes,
    path: bytes,
    authority: str,
    status: int,
) -> bool:
    """Whether a finished request passes the filter (an empty field matches all)."""
    if tap_filter.direction and direction != tap_filter.direction:
        return False
    if tap_filter.method and method.decode("latin-1") != tap_filter.method:
        return False
    if tap_filter.path_prefix and not path.decode("latin-1").startswith(tap_filter.path_prefix):
        return False
    if tap_filter.authority and authority.lower() != tap_filter.authority.lower():
        return False
    wanted = tap_filter.status
    if wanted:
        if wanted.endswith("xx"):
            return status // 100 == int(wanted[0])
        return status == int(wanted)
    return True


def mesh_leg(
    request: FinishedRequest, endpoint: EndpointLookup | None, own_principal: str | None
) -> tuple[bool, str | None]:
    """The mesh leg's security: whether it carried mTLS, and the SPIFFE ID at its other
    end. Served (inbound): the caller came over mTLS or not. Calling (outbound, a
    gateway): the endpoint is a proxy reached over mTLS when it runs one and we hold an
    SVID, as the metrics' connection_security_policy says."""
    if request.side.reporter == "destination":
        return request.peer_principal is not None, request.peer_principal
    found = (
        endpoint(request.cluster_name, request.upstream_host)
        if endpoint is not None and request.cluster_name and request.upstream_host
        else None
    )
    if found is None or not found.mtls or own_principal is None:
        return False, None
    return True, found.identity or None


def event_of(request: FinishedRequest, mesh: tuple[bool, str | None] = (False, None)) -> p.TapEvent:
    """A finished request as a tap reports it (`mesh`: `mesh_leg`'s answer)."""
    return p.TapEvent(
        ts=time.time(),
        direction=request.side.direction,
        protocol=request.protocol,
        method=request.method.decode("latin-1"),
        # cut, so that a batch stays within its message limit whatever the requests
        path=request.target[: p.TAP_FIELD_CHARS].decode("latin-1"),
        authority=request.host[: p.TAP_FIELD_CHARS],
        service=request.service,
        status=request.status,
        latency_ms=round((request.ended - request.started) * 1000, 3),
        source=request.peer_host,
        source_principal=request.peer_principal,
        destination=request.upstream_host,
        reason=request.reason,
        response_flags=response_flags(request.reason, request.status),
        mesh_mtls=mesh[0],
        mesh_peer=mesh[1],
    )


@dataclass(slots=True)
class _Session:
    id: str
    filter: p.TapFilter
    remaining: int  # events still to send; -1: no limit
    bucket: TokenBucket
    expiry: asyncio.TimerHandle
    batch: list[p.TapEvent] = field(default_factory=list)
    dropped: int = 0


class Tap:
    """The request observer behind `myc tap` on one proxy.

    `send` puts a message on the discovery stream and says whether it could (False:
    the stream is down, and every tap ends)."""

    def __init__(
        self,
        send: Callable[[p.ClientMessage], bool],
        *,
        endpoint: EndpointLookup | None = None,
        own_principal: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._send = send
        self._endpoint = endpoint
        self._own_principal = own_principal
        self.sessions: dict[str, _Session] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self.events_built = 0  # for tests and /stats: stays 0 while no tap is active

    # --- the hot path ------------------------------------------------------------------

    def request_finished(self, request: FinishedRequest) -> None:
        if self.sessions:
            self._observe(request)

    def _observe(self, request: FinishedRequest) -> None:
        now = time.monotonic()
        event: p.TapEvent | None = None
        direction = request.side.direction
        for session in list(self.sessions.values()):
            if not matches(
                session.filter,
                direction=direction,
                method=request.method,
                path=request.target,
                authority=request.host,
                status=request.status,
            ):
                continue
            if not session.bucket.try_take(now):
                session.dropped += 1
                continue
            if event is None:
                event = event_of(request, mesh_leg(request, self._endpoint, self._own_principal()))
                self.events_built += 1
            session.batch.append(event)
            if session.remaining > 0:
                session.remaining -= 1
                if session.remaining == 0:
                    self._end(session, "max")
                    continue
            if len(session.batch) >= BATCH_EVENTS:
                self._flush(session)
            elif self._flush_timer is None:
                loop = asyncio.get_running_loop()
                self._flush_timer = loop.call_later(FLUSH_SECONDS, self._flush_all)

    # --- commands from the controller -------------------------------------------------

    def command(self, message: p.TapStart | p.TapStop) -> None:
        if isinstance(message, p.TapStop):
            session = self.sessions.get(message.id)
            if session is not None:
                self._end(session, "stopped")
            return
        previous = self.sessions.pop(message.id, None)
        if previous is not None:
            previous.expiry.cancel()
        if len(self.sessions) >= MAX_TAPS:
            log.warning("refusing tap %s: %d taps are active already", message.id, MAX_TAPS)
            self._send(p.TapEvents(id=message.id, ended="too_many_taps"))
            return
        loop = asyncio.get_running_loop()
        self.sessions[message.id] = _Session(
            id=message.id,
            filter=message.filter,
            remaining=message.max or -1,
            # a second's worth at once, then the rate: a burst is shown, a flood is not
            bucket=TokenBucket(message.rate, message.rate),
            expiry=loop.call_later(message.seconds, self._expire, message.id),
        )
        log.info("tap %s started (%s)", message.id, message.filter)

    def stream_lost(self) -> None:
        """The discovery stream went: nobody receives these taps any more."""
        for session in self.sessions.values():
            session.expiry.cancel()
        self.sessions.clear()
        self._cancel_flush()

    # --- batches --------------------------------------------------------------------------

    def _expire(self, tap_id: str) -> None:
        session = self.sessions.get(tap_id)
        if session is not None:
            self._end(session, "deadline")

    def _end(self, session: _Session, why: str) -> None:
        del self.sessions[session.id]
        session.expiry.cancel()
        self._flush(session, ended=why)
        if not self.sessions:
            self._cancel_flush()
        log.info("tap %s ended: %s", session.id, why)

    def _flush_all(self) -> None:
        self._flush_timer = None
        for session in list(self.sessions.values()):
            if session.batch or session.dropped:
                self._flush(session)

    def _flush(self, session: _Session, ended: str = "") -> None:
        events, session.batch = session.batch, []
        dropped, session.dropped = session.dropped, 0
        sent = self._send(p.TapEvents(id=session.id, events=events, dropped=dropped, ended=ended))
        if not sent:
            self.stream_lost()

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
