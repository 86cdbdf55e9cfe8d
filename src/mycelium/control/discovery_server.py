"""The discovery server: ships what the compiler produced to each connected proxy.

Per proxy a `ProxySession` remembers what the proxy acknowledged, what is in flight and
whether it NACKed. Compiled pieces (`Bundle`s) live in a shared cache: a service's
outbound bundle is compiled once per change and shared by every proxy subscribed to it.
Which other bundles a proxy gets is its role's row in `compiler.roles`; a proxy whose
role has none is refused at its hello.
Store changes arrive as topics; after a short quiet period (debounce, bounded by a
maximum delay so a steady trickle cannot starve pushes) the dirty bundles are recompiled
once and every affected proxy gets one delta. A proxy has at most one push in flight;
changes that arrive meanwhile are coalesced into the next one, sent on its ACK or NACK.

Every proxy can reach this port, and so can whatever runs beside it, so the server
bounds what any client can make it do (docs/discovery.md, "Limits"). Before a stream is
authenticated: a cap on such connections in all and per address, one deadline for the
TLS handshake and the hello together, and a hello of a few KiB at most. After it: a
size limit per message type, a message rate per stream, bounds on what a proxy can make
the controller keep (subscriptions, traffic series, tap events), telemetry believed
only about its reporter, and no buffering for a proxy that does not read. Each refusal
is counted by reason (`refusals`) and logged with the peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mycelium import __version__
from mycelium.control.client_limits import ClientLimits, retry_after_header
from mycelium.control.compiler.common import Bundle, CompiledEntry
from mycelium.control.compiler.roles import (
    OWN_BUNDLES,
    SERVICE_BUNDLE,
    RoleNotCompiled,
    bundles_of_role,
)
from mycelium.control.compiler.service import compile_service
from mycelium.control.compiler.topics import topics_of_change
from mycelium.control.config import DiscoveryLimits
from mycelium.control.connection_limits import ConnectionLimits
from mycelium.control.discovery_auth import StreamCredentials, StreamRefused
from mycelium.control.refusals import RefusalLog
from mycelium.control.state import MeshState
from mycelium.control.svids import IssuedSvid
from mycelium.control.traffic import TrafficStore, describes_reporter
from mycelium.discovery import protocol as p
from mycelium.discovery.errors import ProtocolViolation
from mycelium.token_bucket import TokenBucket

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
# After accept() fails (no file descriptor left), wait this long before the next.
ACCEPT_RETRY_SECONDS = 0.1
# Reads take at most this much at a time, and a stream's reader holds at most twice
# this before it stops reading the socket: what one connection buffers in user space.
READ_BYTES = 64 * 1024

# The cache key prefix of a subscribed service's bundle (the others': their kind).
_SERVICE_KEY = "svc"

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

    def compiled(self, bundle_kind: str, seconds: float) -> None:
        """Compiling a bundle of `bundle_kind` ("inbound", "gateway", "service") took
        `seconds`."""


class _Unobserved:
    def push_answered(self, seconds: float) -> None:
        pass

    def compiled(self, bundle_kind: str, seconds: float) -> None:
        pass


class TapListener(Protocol):
    """Who receives a tap's batches (control/tap.ActiveTap)."""

    def events(self, node: p.NodeInfo, message: p.TapEvents) -> int:
        """Take a batch; how many of its events were over the tap's rate."""

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
    peer: str = "?"  # the client's address
    # Bytes the proxy may leave unread beyond the push in flight before it is cut off.
    unread_limit: int = 1024 * 1024
    in_flight_bytes: int = 0  # the push in flight's frame
    cut_off: bool = False  # True: it left too much unread, and the stream was cut
    resumed: bool = False  # its `resume` came (what it holds and wants)
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
        """Write `frame`, unless the proxy left more unread than it may: then cut the
        stream (the server counts it), rather than buffer for a peer that does not read."""
        writer = self.writer
        if writer.is_closing():
            return
        unread = writer.transport.get_write_buffer_size()
        if unread + len(frame) > self.unread_limit + self.in_flight_bytes:
            self.cut_off = True
            writer.transport.abort()
            return
        writer.write(frame)


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
        limits: DiscoveryLimits | None = None,
    ) -> None:
        self._state = state
        self.limits = limits = limits or DiscoveryLimits()
        self._unauthenticated = ConnectionLimits(
            limits.unauthenticated, limits.unauthenticated_per_address
        )
        # every refusal of a connection or a message, by reason (authentication's own
        # refusals are the controller's `stream_refusals`)
        self.refusals = RefusalLog(log, "discovery traffic")
        self.traffic_rows_refused: Counter[str] = Counter()
        self._tls: ssl.SSLContext | None = None
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
        self._listening: socket.socket | None = None
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
        # The server accepts sockets itself: a connection is counted, and its deadline
        # runs, from the moment it is accepted, before the TLS handshake (which asyncio's
        # create_server would do before telling us of the connection at all).
        self._tls = ssl_context
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listening = socket.socket(family, kind, proto)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind(address)
            listening.listen(4096)
            listening.setblocking(False)
        except OSError:
            listening.close()
            raise
        self._listening = listening
        self._spawn(self._accept_loop(listening))
        self._spawn(self._flush_loop())
        self._spawn(self._reaper_loop())
        return int(listening.getsockname()[1])

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            session.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listening is not None:
            self._listening.close()

    @property
    def unauthenticated_connections(self) -> int:
        return self._unauthenticated.open

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
        """The cache keys of the proxy's bundles: "<kind>|<node id>" for those its role
        gives it alone, "svc|<namespace>|<reference>" for its subscriptions' (keys feed
        snapshot versions, so they stay as every controller version spells them)."""
        node = session.node
        keys = [f"{own.kind}|{node.id}" for own in bundles_of_role(node.role).own]
        keys += [_service_key(node.namespace, ref) for ref in sorted(session.subscriptions)]
        return keys

    def _compile(self, key: str) -> Bundle:
        old = self._bundles.get(key)
        if old is not None:
            for topic in old.topics:
                self._by_topic[topic].discard(key)
        started = time.perf_counter()
        prefix, rest = key.split("|", 1)
        if prefix == _SERVICE_KEY:
            kind = SERVICE_BUNDLE
            namespace, reference = rest.split("|", 1)
            bundle = compile_service(self._state, reference, namespace)
        else:
            own = OWN_BUNDLES[prefix]
            kind = own.kind
            bundle = own.compile(self._state, self.sessions[rest].node, self._trust_domain)
        self._observer.compiled(kind, time.perf_counter() - started)
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
        frame = p.encode_push(
            session.nonce,
            version,
            full,
            [e.wire for e in (entries.values() if full else changed)],
            [] if full else removed,
        )
        session.in_flight_bytes = len(frame)
        session.send_frame(frame)

    def _on_answer(self, session: ProxySession, message: p.Ack | p.Nack) -> None:
        if session.in_flight is None or session.in_flight[0] != message.nonce:
            return  # an answer to a push we already superseded
        _, version, entries = session.in_flight
        session.in_flight = None
        session.in_flight_bytes = 0
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

    async def _accept_loop(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, address = await loop.sock_accept(listening)
            except OSError as exc:  # out of file descriptors, most likely: say so, go on
                log.error("accepting a discovery connection failed: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            peer = str(address[0])
            refusal = self._unauthenticated.try_open(peer)
            if refusal is None:
                self._spawn(self._serve(connection, peer))
                continue
            connection.close()  # nothing read, nothing said: the peer is nobody yet
            held = self._unauthenticated.held_by(peer)
            self.refusals.refuse(
                refusal,
                peer,
                f"{self._unauthenticated.open} connections are waiting to authenticate "
                f"({held} from this address); retry later",
                time.monotonic(),
            )

    async def _serve(self, connection: socket.socket, peer: str) -> None:
        session: ProxySession | None = None
        writer: asyncio.StreamWriter | None = None
        seconds = self.limits.hello_seconds
        try:
            try:
                try:
                    async with asyncio.timeout(seconds):
                        reader, writer = await self._start_stream(connection)
                        hello, decoder = await _read_hello(reader)
                except TimeoutError:
                    what = "hello" if writer is not None else "handshake"
                    raise StreamRefused(
                        f"{what}_timeout",
                        f"no {'hello' if writer else 'TLS handshake'} within {seconds:g} s "
                        "of connecting",
                    ) from None
                except ssl.SSLError as exc:
                    detail = f"the TLS handshake failed: {exc.reason or exc}"
                    raise StreamRefused("tls_failed", detail) from None
                session = await self._open_session(hello, writer, peer)
            finally:
                self._unauthenticated.close(peer)
            if session is not None:
                decoder.relimit(p.MAX_CLIENT_FRAME_BYTES, skip_oversized=True)
                await self._follow(session, reader, decoder)
        except StreamRefused as exc:
            self.refusals.refuse(exc.reason, _who(peer, session), str(exc), time.monotonic())
            if writer is not None:  # a peer that failed its handshake gets no plaintext
                with contextlib.suppress(Exception):
                    writer.write(p.encode(p.Refusal(code="protocol", message=str(exc))))
        except (ConnectionError, ssl.SSLError):
            pass
        except Exception:  # a bug of ours: this stream ends, the others go on; say so
            log.exception("the discovery stream from %s failed", _who(peer, session))
        finally:
            if session is not None:
                self._close_session(session)
                if session.cut_off:
                    self.refusals.refuse(
                        "slow_reader",
                        _who(peer, session),
                        f"the proxy left more than {session.unread_limit} bytes unread "
                        "besides its pending push; its stream was cut",
                        time.monotonic(),
                    )
            if writer is not None:
                writer.close()
            else:
                connection.close()

    async def _start_stream(
        self, connection: socket.socket
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The accepted socket as a stream, after the TLS handshake (unless we serve
        none). Its reader holds at most twice READ_BYTES before it stops reading."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.connect_accepted_socket(
            lambda: protocol, connection, ssl=self._tls
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _follow(
        self, session: ProxySession, reader: asyncio.StreamReader, decoder: p.FrameDecoder
    ) -> None:
        """Handle an authenticated proxy's messages until its stream ends."""
        limits = self.limits
        budget = TokenBucket(limits.messages_per_second, limits.message_burst)
        while True:
            while (frame := decoder.next_frame()) is not None:
                now = time.monotonic()
                if not budget.try_take(now):
                    # Read no further until the proxy is within its rate again: TCP
                    # slows it down, and its messages wait in its own buffers, not ours.
                    self.refusals.refuse(
                        "throttled",
                        _who(session.peer, session),
                        f"over {limits.messages_per_second:g} messages a second; "
                        "reading its stream more slowly",
                        now,
                    )
                    await asyncio.sleep(budget.retry_after(now))
                    budget.try_take(time.monotonic())
                session.last_seen = time.monotonic()
                if isinstance(frame, p.SkippedFrame):
                    self._refuse_message(
                        session,
                        "",
                        "message_too_large",
                        f"a frame of {frame.length} bytes is larger than any message a proxy "
                        f"may send ({p.MAX_CLIENT_FRAME_BYTES}); it was skipped unread",
                    )
                    continue
                try:
                    message = p.parse_client_message(frame)
                except p.MessageTooLarge as exc:
                    self._refuse_message(session, exc.tag, "message_too_large", str(exc))
                    continue
                except ProtocolViolation as exc:
                    self._refuse_message(session, "", "malformed", str(exc))
                    continue
                await self._handle(session, message)
            data = await reader.read(READ_BYTES)
            if not data:
                return
            decoder.receive(data)

    def _refuse_message(
        self, session: ProxySession, refused: str, reason: str, detail: str
    ) -> None:
        """Count and log one refused message, and tell the proxy; its stream goes on."""
        self.refusals.refuse(reason, _who(session.peer, session), detail, time.monotonic())
        session.send(p.MessageRefused(refused=refused, reason=reason, message=detail))

    async def _open_session(
        self, hello: p.Hello, writer: asyncio.StreamWriter, peer: str
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
        try:
            bundles_of_role(hello.node.role)
        except RoleNotCompiled as exc:
            # Config meant for another role would be wrong; nothing is better.
            raise StreamRefused("unsupported_role", str(exc)) from None
        if self._authenticate is not None:
            problem = self._authenticate(hello, _credentials(writer))
            if problem is not None:
                writer.write(p.encode(p.Refusal(code="unauthenticated", message=problem)))
                return None
        previous = self.sessions.get(hello.node.id)
        if previous is not None:  # the same proxy reconnected before we noticed it left
            self._close_session(previous)
            previous.writer.close()
        # `dirty` until its resume says what it holds: the first push answers that.
        session = ProxySession(
            node=hello.node,
            writer=writer,
            peer=peer,
            unread_limit=self.limits.unread_bytes,
            dirty=True,
        )
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
        for listener in list(self.taps.values()):  # a tap follows its target's new pods
            start = listener.proxy_joined(session.node)
            if start is not None:
                session.send(start)
        return session

    def _resume(self, session: ProxySession, message: p.Resume) -> None:
        session.resumed = True
        session.held = dict(message.held)
        session.acked_version = message.version if message.held else ""
        self._subscribe(session, message.subscriptions, ())
        self._push(session, full=not session.held)

    def _subscribe(self, session: ProxySession, add: list[str], remove: Iterable[str]) -> bool:
        """Change what the proxy subscribes to, within `MAX_SUBSCRIPTIONS` (the excess
        is refused and counted); whether anything changed."""
        before = set(session.subscriptions)
        session.subscriptions -= set(remove)
        new = [ref for ref in dict.fromkeys(add) if ref not in session.subscriptions]
        room = p.MAX_SUBSCRIPTIONS - len(session.subscriptions)
        if len(new) > room:
            self._refuse_message(
                session,
                "subscribe",
                "subscription_limit",
                f"{len(new) - room} of the {len(new)} services asked for are over the limit "
                f"of {p.MAX_SUBSCRIPTIONS} subscriptions a proxy; drop some first",
            )
            new = new[:room]
        session.subscriptions.update(new)
        for ref in before - session.subscriptions:
            self._release(session.node.id, _service_key(session.node.namespace, ref))
        return session.subscriptions != before

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
        if listener is None:
            if not message.ended:
                session.send(p.TapStop(id=message.id))  # nobody listens any more
            return
        over = listener.events(session.node, message)
        if over:
            self._refuse_message(
                session,
                "tap_events",
                "tap_over_rate",
                f"{over} of {len(message.events)} tap events were over the tap's rate "
                "and were dropped",
            )

    async def _handle(self, session: ProxySession, message: p.ClientMessage) -> None:
        if not session.resumed:
            if not isinstance(message, p.Resume):
                raise StreamRefused(
                    "no_resume",
                    f"the message after the hello must be a resume, not {p.message_type(message)}",
                )
            self._resume(session, message)
        elif isinstance(message, p.TapEvents):
            self._tap_events(session, message)
        elif isinstance(message, p.Ack | p.Nack):
            self._on_answer(session, message)
        elif isinstance(message, p.Subscribe):
            if self._subscribe(session, message.add, message.remove):
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
            self._telemetry(session, message)
        elif isinstance(message, p.CertificateRequest):
            session.send(self._certificate(session, message))
        elif isinstance(message, p.Hello | p.Resume):
            self._refuse_message(
                session,
                p.message_type(message),
                f"second_{p.message_type(message)}",
                f"a stream has one {p.message_type(message)}; this one was ignored",
            )

    def _telemetry(self, session: ProxySession, message: p.TelemetryReport) -> None:
        """Count what the proxy says it forwarded, believing only rows about itself."""
        self.telemetry_reports += 1
        node = session.node
        rows = [row for row in message.rows if describes_reporter(row, node)]
        forged = len(message.rows) - len(rows)
        if forged:
            self.traffic_rows_refused["not_reporter"] += forged
            self._refuse_message(
                session,
                "telemetry",
                "telemetry_not_reporter",
                f"{forged} of {len(message.rows)} rows describe traffic that "
                f"{node.namespace}/{node.workload or node.id} neither sent nor received; "
                "a proxy reports only its own traffic",
            )
        over = self.traffic.add(time.time(), rows, node.id)
        if over:
            self.traffic_rows_refused["series_limit"] += over
            self._refuse_message(
                session,
                "telemetry",
                "traffic_series_limit",
                f"{over} rows would add traffic series beyond the controller's limits; "
                "they were not counted",
            )

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


async def _read_hello(reader: asyncio.StreamReader) -> tuple[p.Hello, p.FrameDecoder]:
    """The hello, within `MAX_HELLO_BYTES`: all a peer gets before it proves who it
    is. Returns it and the decoder, holding what came after it (the resume)."""
    decoder = p.FrameDecoder(p.MAX_HELLO_BYTES)
    try:
        while (frame := decoder.next_frame()) is None:
            data = await reader.read(READ_BYTES)
            if not data:
                raise StreamRefused("no_hello", "the connection closed before its hello")
            decoder.receive(data)
    except p.FrameTooLarge as exc:
        raise StreamRefused(
            "hello_too_large",
            f"the first frame announces {exc.length} bytes; a hello is at most {exc.limit}",
        ) from None
    assert isinstance(frame, bytes)  # the hello's decoder never skips
    try:
        message = p.parse_client_message(frame)
    except ProtocolViolation as exc:
        raise StreamRefused("malformed_hello", str(exc)) from None
    if not isinstance(message, p.Hello):
        raise StreamRefused(
            "not_hello", f"the first message must be a hello, not {p.message_type(message)}"
        )
    return message, decoder


def _service_key(namespace: str, reference: str) -> str:
    return f"{_SERVICE_KEY}|{namespace}|{reference}"


def _who(peer: str, session: ProxySession | None) -> str:
    """A peer as the log names it: its address, and the proxy once it said who it is."""
    return f"{peer} as proxy {session.node.id}" if session is not None else peer


def _credentials(writer: asyncio.StreamWriter) -> StreamCredentials:
    """What the connection proves by itself: its address and any client certificate."""
    peer = writer.get_extra_info("peername")
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return StreamCredentials(
        peer=str(peer[0]) if peer else "?",
        certificate_pem=ssl.DER_cert_to_PEM_cert(der).encode() if der else None,
    )
