"""The discovery server: ships what the compiler produced to each connected proxy.

Per proxy a `ProxySession` remembers what the proxy acknowledged, what is in flight and
whether it NACKed. Compiled pieces (`Bundle`s) live in a shared cache: a service's
outbound bundle is compiled once per change and shared by every proxy subscribed to it.
Store changes arrive as topics; after a short quiet period (debounce, bounded by a
maximum delay so a steady trickle cannot starve pushes) the dirty bundles are recompiled
once and every affected proxy gets one delta. A proxy has at most one push in flight;
changes that arrive meanwhile are coalesced into the next one, sent on its ACK or NACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mycelium import __version__
from mycelium.control.client_limits import ClientLimits, retry_after_header
from mycelium.control.compiler import (
    Bundle,
    CompiledEntry,
    compile_inbound,
    compile_service,
    topics_of_change,
)
from mycelium.control.discovery_auth import StreamCredentials
from mycelium.control.gateway_compiler import compile_gateway
from mycelium.control.state import MeshState
from mycelium.control.svids import IssuedSvid
from mycelium.control.traffic import TrafficStore
from mycelium.discovery import protocol as p
from mycelium.discovery.errors import ProtocolViolation

log = logging.getLogger(__name__)

# Wait this long after the last change before pushing: a burst of applies becomes one push.
DEBOUNCE_SECONDS = 0.05
# ...but never delay a push by more than this, however steady the stream of changes.
MAX_DEBOUNCE_SECONDS = 0.5
# A proxy heart-beats at this interval; its workload lease lasts three intervals.
HEARTBEAT_SECONDS = 5.0
LEASE_TTL_SECONDS = 15.0
# A proxy that sends nothing (not even a heartbeat) for this many intervals is gone.
IDLE_HEARTBEATS = 3
# The Hello must arrive promptly; a connection that says nothing is dropped.
HELLO_TIMEOUT_SECONDS = 10.0

CSR_RATE_PER_SECOND = 0.1
CSR_BURST = 5

type Registrar = Callable[[p.NodeInfo], Awaitable[int | None]]
type LeaseKeeper = Callable[[int], Awaitable[bool]]
# csr (PEM), join token, peer -> the SVID, or (reason, sentence)
type SvidIssuer = Callable[[bytes, str, str], IssuedSvid | tuple[str, str]]
# csr, current SVID (PEM), proof, peer -> the SVID, or (reason, sentence)
type SvidRenewer = Callable[[bytes, bytes, str, str], IssuedSvid | tuple[str, str]]


class DiscoveryObserver(Protocol):
    """Who times what the server does (control/metrics.ControllerMetrics)."""

    def push_answered(self, seconds: float) -> None:
        """A proxy ACKed a push `seconds` after it was sent."""

    def compiled(self, bundle_key: str, seconds: float) -> None:
        """Compiling the bundle `bundle_key` ("svc|ns|ref", "inbound|id"...) took `seconds`."""


class _Unobserved:
    def push_answered(self, seconds: float) -> None:
        pass

    def compiled(self, bundle_key: str, seconds: float) -> None:
        pass


class TapListener(Protocol):
    """Who receives a tap's batches (control/tap.ActiveTap)."""

    def events(self, node: p.NodeInfo, message: p.TapEvents) -> None: ...

    def proxy_gone(self, node_id: str) -> None: ...

    def proxy_joined(self, node: p.NodeInfo) -> p.TapStart | None: ...


def snapshot_version(bundles: list[tuple[str, Bundle]]) -> str:
    """A proxy's snapshot version: a hash of its bundles' versions, so the same config
    gets the same version from any controller, and computing it costs one hash a bundle."""
    digest = hashlib.blake2b(digest_size=8)
    for key, bundle in bundles:
        digest.update(f"{key}={bundle.version};".encode())
    return digest.hexdigest()


@dataclass(slots=True)
class ProxySession:
    node: p.NodeInfo
    writer: asyncio.StreamWriter
    subscriptions: set[str] = field(default_factory=set)
    held: dict[str, str] = field(default_factory=dict)  # what the proxy acknowledged
    acked_version: str = ""
    in_flight: tuple[int, str, dict[str, str]] | None = None  # nonce, version, entries
    sent_version: str = ""
    dirty: bool = False
    rejected_version: str | None = None
    last_nack: tuple[str, str] | None = None  # version, reason
    connected_since: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    lease: int | None = None
    lease_refreshed: float = 0.0
    nonce: int = 0
    pushed_at: float = 0.0
    push_latency: float | None = None  # seconds from push to ACK, for the last ACK
    # The store revision the config in flight / the config acknowledged was compiled
    # at: a resource changed at revision R is in force at this proxy once acked >= R.
    in_flight_revision: int = 0
    acked_revision: int = 0

    @property
    def state(self) -> str:
        if self.in_flight is not None or self.dirty:
            return "pending"
        if self.last_nack is not None and self.rejected_version == self.sent_version:
            return "nack"
        return "synced"

    def send(self, message: p.ServerMessage) -> None:
        self.send_frame(p.encode(message))

    def send_frame(self, frame: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(frame)


class DiscoveryServer:
    def __init__(
        self,
        state: MeshState,
        *,
        register: Registrar | None = None,
        keep_alive: LeaseKeeper | None = None,
        revoke: Callable[[int], Awaitable[None]] | None = None,
        authenticate: Callable[[p.Hello, StreamCredentials], str | None] | None = None,
        issue_svid: SvidIssuer | None = None,
        renew_svid: SvidRenewer | None = None,
        trust_bundle: Callable[[], p.TrustBundle] | None = None,
        trust_domain: str = "cluster.local",
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        lease_ttl_seconds: float = LEASE_TTL_SECONDS,
        observer: DiscoveryObserver | None = None,
    ) -> None:
        self._state = state
        self._observer: DiscoveryObserver = observer or _Unobserved()
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_ttl_seconds = lease_ttl_seconds
        self._register = register
        self._keep_alive = keep_alive
        self._revoke = revoke
        self._authenticate = authenticate
        self._issue_svid = issue_svid
        self._renew_svid = renew_svid
        self._trust_bundle = trust_bundle
        # A proxy needs a certificate every few hours; a burst of requests is a bug or
        # an attack, and each costs a signature.
        self._certificate_limits = ClientLimits(CSR_RATE_PER_SECOND, CSR_BURST)
        self._trust_domain = trust_domain
        self.sessions: dict[str, ProxySession] = {}
        # bundle cache: key -> bundle; topic -> bundle keys; bundle key -> session ids
        self._bundles: dict[str, Bundle] = {}
        self._by_topic: dict[str, set[str]] = defaultdict(set)
        self._users: dict[str, set[str]] = defaultdict(set)
        self._pending_topics: set[str] = set()
        self._first_pending: float | None = None
        self._wake = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.pushes = 0
        self.acks = 0
        self.nacks = 0
        self.telemetry_reports = 0
        # what the proxies report they forwarded: the dashboard's and `myc stat`'s data
        self.traffic = TrafficStore()
        self.taps: dict[str, TapListener] = {}  # tap id -> its listener

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        self._server = await asyncio.start_server(
            self._serve, host, port, ssl=ssl_context, backlog=4096, limit=2**20
        )
        self._spawn(self._flush_loop())
        self._spawn(self._reaper_loop())
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            session.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- changes ----------------------------------------------------------------------------

    def notify(self, topics: set[str]) -> None:
        """Called by the controller for each store change, with the topics it touches."""
        if not topics:
            return
        self._pending_topics |= topics
        if self._first_pending is None:
            self._first_pending = time.monotonic()
        self._wake.set()

    def replace_state(self, state: MeshState) -> None:
        """Swap in a freshly loaded mirror (after a compaction) and recompile everything."""
        self._state = state
        self.notify({topic for topic, keys in self._by_topic.items() if keys})

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            # Debounce: wait until changes stop for DEBOUNCE_SECONDS, or the oldest
            # pending change is MAX_DEBOUNCE_SECONDS old.
            while True:
                self._wake.clear()
                assert self._first_pending is not None
                remaining = self._first_pending + MAX_DEBOUNCE_SECONDS - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), min(DEBOUNCE_SECONDS, remaining))
                except TimeoutError:
                    break
            topics, self._pending_topics = self._pending_topics, set()
            self._first_pending = None
            self._wake.clear()
            try:
                self._flush(topics)
            except Exception:
                log.exception("recompiling after a change failed; proxies keep their config")

    def _flush(self, topics: set[str]) -> None:
        dirty_bundles: set[str] = set()
        for topic in topics:
            dirty_bundles |= self._by_topic.get(topic, set())
        affected: set[str] = set()
        for key in dirty_bundles:
            if key in self._bundles:
                self._compile(key)
                affected |= self._users.get(key, set())
        for session_id in affected:
            session = self.sessions.get(session_id)
            if session is not None:
                self._schedule_push(session)

    # --- bundles ----------------------------------------------------------------------------

    def _bundle_keys(self, session: ProxySession) -> list[str]:
        keys = [f"inbound|{session.node.id}"]
        if session.node.role == "gateway":
            keys.append(f"gateway|{session.node.id}")
        keys += [f"svc|{session.node.namespace}|{ref}" for ref in sorted(session.subscriptions)]
        return keys

    def _compile(self, key: str) -> Bundle:
        old = self._bundles.get(key)
        if old is not None:
            for topic in old.topics:
                self._by_topic[topic].discard(key)
        started = time.perf_counter()
        kind, rest = key.split("|", 1)
        if kind == "inbound":
            session = self.sessions[rest]
            bundle = compile_inbound(self._state, session.node, self._trust_domain)
        elif kind == "gateway":
            bundle = compile_gateway(self._state, self.sessions[rest].node)
        else:
            namespace, reference = rest.split("|", 1)
            bundle = compile_service(self._state, reference, namespace)
        self._observer.compiled(key, time.perf_counter() - started)
        self._bundles[key] = bundle
        for topic in bundle.topics:
            self._by_topic[topic].add(key)
        return bundle

    def _use(self, session: ProxySession, key: str) -> Bundle:
        self._users[key].add(session.node.id)
        return self._bundles.get(key) or self._compile(key)

    def _release(self, session_id: str, key: str) -> None:
        users = self._users.get(key)
        if users is None:
            return
        users.discard(session_id)
        if not users:
            del self._users[key]
            bundle = self._bundles.pop(key, None)
            if bundle is not None:
                for topic in bundle.topics:
                    self._by_topic[topic].discard(key)

    def desired(self, session: ProxySession) -> tuple[str, dict[str, CompiledEntry]]:
        """The snapshot version and entries this proxy should hold now."""
        bundles = [(key, self._use(session, key)) for key in self._bundle_keys(session)]
        entries: dict[str, CompiledEntry] = {}
        for _, bundle in bundles:
            entries.update(bundle.entries)
        return snapshot_version(bundles), entries

    # --- pushing ----------------------------------------------------------------------------

    def _schedule_push(self, session: ProxySession) -> None:
        if session.in_flight is not None:
            session.dirty = True  # coalesced: sent when the proxy answers
            return
        self._push(session)

    def _push(self, session: ProxySession, *, full: bool = False) -> None:
        session.dirty = False
        version, entries = self.desired(session)
        if version == session.rejected_version and not full:
            return  # the proxy refused exactly this; wait for a change
        if not full and version == session.acked_version:
            # Nothing changed for this proxy: what it holds is this revision's config.
            session.acked_revision = self._state.revision
            return
        changed = [e for n, e in entries.items() if session.held.get(n) != e.version]
        removed = [n for n in session.held if n not in entries]
        session.nonce += 1
        session.in_flight = (session.nonce, version, {n: e.version for n, e in entries.items()})
        session.in_flight_revision = self._state.revision
        session.sent_version = version
        session.pushed_at = time.monotonic()
        self.pushes += 1
        session.send_frame(
            p.encode_push(
                session.nonce,
                version,
                full,
                [e.wire for e in (entries.values() if full else changed)],
                [] if full else removed,
            )
        )

    def _on_answer(self, session: ProxySession, message: p.Ack | p.Nack) -> None:
        if session.in_flight is None or session.in_flight[0] != message.nonce:
            return  # an answer to a push we already superseded
        _, version, entries = session.in_flight
        session.in_flight = None
        if isinstance(message, p.Ack):
            self.acks += 1
            session.held = entries
            session.acked_version = version
            session.acked_revision = session.in_flight_revision
            session.rejected_version = None
            session.last_nack = None
            session.push_latency = time.monotonic() - session.pushed_at
            self._observer.push_answered(session.push_latency)
        else:
            self.nacks += 1
            session.rejected_version = version
            session.last_nack = (version, message.reason)
            log.warning("proxy %s rejected config %s: %s", session.node.id, version, message.reason)
        if session.dirty:
            self._push(session)

    def sessions_affected_by(self, resource: Any) -> list[ProxySession]:
        """The connected proxies whose config depends on `resource` (by the topics of
        the bundles they hold): those that must acknowledge a change of it."""
        ids: set[str] = set()
        for topic in topics_of_change(self._state, None, resource):
            for key in self._by_topic.get(topic, ()):
                ids.update(self._users.get(key, ()))
        return [self.sessions[i] for i in sorted(ids) if i in self.sessions]

    # --- connections --------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = p.FrameDecoder()
        session: ProxySession | None = None
        hello_deadline = time.monotonic() + HELLO_TIMEOUT_SECONDS
        try:
            while True:
                if session is None:
                    wait = max(0.0, hello_deadline - time.monotonic())
                    data = await asyncio.wait_for(reader.read(65536), wait)
                else:
                    data = await reader.read(65536)
                if not data:
                    break
                for payload in decoder.feed(data):
                    message = p.parse_client_message(payload)
                    if session is None:
                        if not isinstance(message, p.Hello):
                            raise ProtocolViolation("the first message must be a hello")
                        session = await self._open_session(message, writer)
                        if session is None:
                            return
                    else:
                        session.last_seen = time.monotonic()
                        await self._handle(session, message)
        except (ProtocolViolation, TimeoutError) as exc:
            log.info("dropping discovery connection: %s", exc)
            with contextlib.suppress(Exception):
                writer.write(p.encode(p.Refusal(code="protocol", message=str(exc))))
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            if session is not None:
                self._close_session(session)
            writer.close()

    async def _open_session(
        self, hello: p.Hello, writer: asyncio.StreamWriter
    ) -> ProxySession | None:
        if hello.protocol != p.PROTOCOL_VERSION:
            writer.write(
                p.encode(
                    p.Refusal(
                        code="protocol",
                        message=f"protocol {hello.protocol} is not supported; "
                        f"upgrade the proxy to speak {p.PROTOCOL_VERSION}",
                    )
                )
            )
            return None
        if self._authenticate is not None:
            problem = self._authenticate(hello, _credentials(writer))
            if problem is not None:
                writer.write(p.encode(p.Refusal(code="unauthenticated", message=problem)))
                return None
        previous = self.sessions.get(hello.node.id)
        if previous is not None:  # the same proxy reconnected before we noticed it left
            self._close_session(previous)
            previous.writer.close()
        session = ProxySession(node=hello.node, writer=writer)
        session.subscriptions = set(hello.subscriptions)
        session.held = dict(hello.held)
        session.acked_version = hello.version if hello.held else ""
        self.sessions[hello.node.id] = session
        if hello.registered:
            await self._join(session)
        session.send(
            p.Welcome(
                controller_version=__version__,
                heartbeat_interval=self.heartbeat_seconds,
                lease_ttl=self.lease_ttl_seconds,
                trust_domain=self._trust_domain,
            )
        )
        if self._trust_bundle is not None:
            session.send(self._trust_bundle())
        self._push(session, full=not session.held)
        for listener in list(self.taps.values()):  # a tap follows its target's new pods
            start = listener.proxy_joined(session.node)
            if start is not None:
                session.send(start)
        return session

    def broadcast_trust_bundle(self) -> int:
        """Send the current trust bundle to every connected proxy (after a CA reload);
        returns how many got it."""
        if self._trust_bundle is None:
            return 0
        message = self._trust_bundle()
        for session in self.sessions.values():
            session.send(message)
        return len(self.sessions)

    # --- taps --------------------------------------------------------------------------------

    def start_tap(self, start: p.TapStart, node_ids: list[str], listener: TapListener) -> None:
        """Send `start` to these proxies and hand their batches to `listener`."""
        self.taps[start.id] = listener
        for node_id in node_ids:
            session = self.sessions.get(node_id)
            if session is None:
                listener.proxy_gone(node_id)
            else:
                session.send(start)

    def stop_tap(self, tap_id: str, node_ids: set[str]) -> None:
        """Forget the tap; tell the proxies still tapping to stop."""
        self.taps.pop(tap_id, None)
        for node_id in node_ids:
            session = self.sessions.get(node_id)
            if session is not None:
                session.send(p.TapStop(id=tap_id))

    def _tap_events(self, session: ProxySession, message: p.TapEvents) -> None:
        listener = self.taps.get(message.id)
        if listener is not None:
            listener.events(session.node, message)
        elif not message.ended:
            session.send(p.TapStop(id=message.id))  # nobody listens any more

    async def _handle(self, session: ProxySession, message: p.ClientMessage) -> None:
        if isinstance(message, p.TapEvents):
            self._tap_events(session, message)
        elif isinstance(message, p.Ack | p.Nack):
            self._on_answer(session, message)
        elif isinstance(message, p.Subscribe):
            before = set(session.subscriptions)
            session.subscriptions |= set(message.add)
            session.subscriptions -= set(message.remove)
            for ref in before - session.subscriptions:
                self._release(session.node.id, f"svc|{session.node.namespace}|{ref}")
            if session.subscriptions != before:
                self._schedule_push(session)
        elif isinstance(message, p.Heartbeat):
            session.send(p.Heartbeat())
            await self._refresh_lease(session)
        elif isinstance(message, p.Leave):
            # The stream stays: a pod about to stop still gets config; a proxy that
            # shuts down closes it itself.
            if session.lease is not None and self._revoke is not None:
                lease, session.lease = session.lease, None
                await self._revoke(lease)
        elif isinstance(message, p.Join):
            await self._join(session)
        elif isinstance(message, p.TelemetryReport):
            self.telemetry_reports += 1
            self.traffic.add(time.time(), message.rows)
        elif isinstance(message, p.CertificateRequest):
            session.send(self._certificate(session, message))
        elif isinstance(message, p.Hello):
            raise ProtocolViolation("hello sent twice on one stream")

    def _certificate(
        self, session: ProxySession, request: p.CertificateRequest
    ) -> p.CertificateIssued | p.CertificateRefused:
        wait = self._certificate_limits.admit(session.node.id, time.monotonic())
        if wait is not None:
            return p.CertificateRefused(
                request_id=request.request_id,
                reason="rate_limited",
                message=f"too many certificate requests; retry in {retry_after_header(wait)} s",
            )
        if self._issue_svid is None:
            return p.CertificateRefused(
                request_id=request.request_id,
                reason="no_ca",
                message="this controller signs no certificates",
            )
        if request.current and self._renew_svid is not None:
            answer = self._renew_svid(
                request.csr.encode(), request.current.encode(), request.proof, session.node.id
            )
        else:
            answer = self._issue_svid(request.csr.encode(), request.token, session.node.id)
        if isinstance(answer, tuple):
            reason, message = answer
            return p.CertificateRefused(
                request_id=request.request_id, reason=reason, message=message
            )
        return p.CertificateIssued(
            request_id=request.request_id,
            certificate=answer.certificate.decode(),
            trust_bundle=answer.trust_bundle.decode(),
            expires_at=answer.expires_at,
        )

    async def _join(self, session: ProxySession) -> None:
        """Register the session's workload under a lease (once; it needs a name and
        an address)."""
        node = session.node
        if session.lease is None and self._register is not None and node.workload and node.address:
            session.lease = await self._register(node)
            session.lease_refreshed = time.monotonic()

    async def _refresh_lease(self, session: ProxySession) -> None:
        if session.lease is None or self._keep_alive is None:
            return
        now = time.monotonic()
        if now - session.lease_refreshed < self.lease_ttl_seconds / 3:
            return
        session.lease_refreshed = now
        if not await self._keep_alive(session.lease) and self._register is not None:
            # The lease expired (e.g. the store was unreachable for a while): register again.
            session.lease = await self._register(session.node)

    def _close_session(self, session: ProxySession) -> None:
        if self.sessions.get(session.node.id) is not session:
            return
        del self.sessions[session.node.id]
        for key in self._bundle_keys(session):
            self._release(session.node.id, key)
        for listener in list(self.taps.values()):
            listener.proxy_gone(session.node.id)
        # The workload lease is left to expire: a proxy that reconnects within its TTL
        # (to this controller or another) keeps its registration without a flap.

    async def _reaper_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            deadline = time.monotonic() - IDLE_HEARTBEATS * self.heartbeat_seconds
            for session in list(self.sessions.values()):
                if session.last_seen < deadline:
                    log.info("proxy %s went silent; closing its stream", session.node.id)
                    self._close_session(session)
                    session.writer.close()


def _credentials(writer: asyncio.StreamWriter) -> StreamCredentials:
    """What the connection proves by itself: its address and any client certificate."""
    peer = writer.get_extra_info("peername")
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return StreamCredentials(
        peer=str(peer[0]) if peer else "?",
        certificate_pem=ssl.DER_cert_to_PEM_cert(der).encode() if der else None,
    )
