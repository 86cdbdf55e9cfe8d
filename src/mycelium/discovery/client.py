"""The discovery client every proxy embeds (sidecar, gateway, waypoint, ztunnel).

It keeps one TLS stream to a controller, applies pushed deltas to the current snapshot,
asks the proxy to accept the result (`on_update` raising means NACK, and the previous
snapshot stays in force), ACKs, and persists every accepted snapshot to disk. At start
it loads the last-known-good snapshot from disk first, so a proxy serves even when no
controller is reachable (static stability); it then reconnects with capped exponential
backoff and resumes by telling the controller which entry versions it already holds.

Several controllers may be given; the client moves to the next on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec

from mycelium.discovery import protocol as p
from mycelium.discovery.config import parse_entry
from mycelium.discovery.errors import (
    CertificateRefusedError,
    ControllerRefused,
    DiscoveryError,
    ProtocolViolation,
)
from mycelium.net.tls_memory import load_certificate_chain

log = logging.getLogger(__name__)

# Reconnect backoff: starts small so a controller restart costs little, capped so that a
# long outage does not turn into a reconnect storm from every proxy at once.
BACKOFF_INITIAL_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
SNAPSHOT_FILE = "discovery-snapshot.json"
# A clean stop waits this long for its goodbye to be sent, then closes anyway.
LEAVE_TIMEOUT_SECONDS = 1.0

type Snapshot = dict[str, p.Entry]
type UpdateHook = Callable[[Snapshot, str], None]


@dataclass(frozen=True, slots=True)
class ControllerAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ControllerAddress:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"controller address {text!r} must look like HOST:PORT")
        return cls(host.strip("[]"), int(port))


def validate_snapshot(snapshot: Snapshot, version: str) -> None:
    """The default acceptance check: every entry parses as its declared type."""
    for name, entry in snapshot.items():
        parse_entry(name, entry.body)


class DiscoveryClient:
    def __init__(
        self,
        controllers: list[ControllerAddress],
        node: p.NodeInfo,
        *,
        trust_bundle: Path | ssl.SSLContext | None,
        state_dir: Path | None = None,
        on_update: UpdateHook = validate_snapshot,
        subscriptions: list[str] | None = None,
        token: str | None = None,
        server_name: str | None = None,
        registered: bool = True,
    ) -> None:
        if not controllers:
            raise ValueError("at least one controller address is required")
        self.node = node
        # Whether our workload (if the node names one) is registered: False until
        # `join_mesh` for a pod whose app is not ready yet, and again after `leave_mesh`.
        self.registered = registered
        self._controllers = controllers
        # A context we build from a file follows the bundle the controller sends (a
        # root rotation must not lock us out) and presents our SVID once we hold one;
        # one handed to us (many clients in one process can share one) is the caller's,
        # used as it is.
        self._trust_bundle_path = trust_bundle if isinstance(trust_bundle, Path) else None
        self._bundle_pem: str | None = None
        self._identity: tuple[bytes, bytes] | None = None  # certificate chain, key (PEM)
        self._tls = (
            self._first_context(self._trust_bundle_path)
            if self._trust_bundle_path is not None
            else cast(ssl.SSLContext | None, trust_bundle)
        )
        self.trust_bundle: p.TrustBundle | None = None
        self.on_trust_bundle: list[Callable[[p.TrustBundle], None]] = []
        # Taps (see telemetry/tap.py): the controller's commands, and the stream's end.
        self.on_tap: Callable[[p.TapStart | p.TapStop], None] | None = None
        self.on_stream_lost: list[Callable[[], None]] = []
        self._server_name = server_name
        self._state_dir = state_dir
        self._on_update = on_update
        self._token = token
        self.subscriptions: set[str] = set(subscriptions or [])
        self.snapshot: Snapshot = {}
        self.version = ""
        self.connected = asyncio.Event()
        self.last_nack: str | None = None
        # pushes rejected, for metrics (accepted ones: the core's config_accepted counter)
        self.nacks = 0
        # our messages the controller refused, by its reason (a bug of ours, or a bound)
        self.refused: Counter[str] = Counter()
        self.loaded_from_disk = False
        self._changed = asyncio.Condition()
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_interval = 5.0
        self._last_heard = 0.0
        self._stopping = False
        self.trust_domain = "cluster.local"  # as the controller's Welcome says
        self._certificate_requests: dict[int, asyncio.Future[p.CertificateIssued]] = {}
        self._next_request_id = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the last-known-good snapshot (if any), then keep a stream open in the background."""
        self._load_from_disk()
        self._task = asyncio.create_task(self._run())

    async def join_mesh(self) -> None:
        """Register our workload now (and at every reconnect from here on): the app
        behind us is ready for traffic."""
        await self._set_registered(True, p.Join())

    async def leave_mesh(self) -> None:
        """Deregister our workload now and stay connected: peers stop choosing us, and
        what they still send is served. A reconnect does not register us again. The
        first step of a graceful stop, before the app goes."""
        await self._set_registered(False, p.Leave())

    async def _set_registered(self, registered: bool, message: p.ClientMessage) -> None:
        self.registered = registered
        writer = self._writer
        if writer is not None and self.connected.is_set():
            self.send(message)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), LEAVE_TIMEOUT_SECONDS)

    async def stop(self, *, leave: bool = True) -> None:
        """Stop. With `leave`, say goodbye so the controller deregisters our workload at
        once; without, the workload stays until its lease expires (as after a crash)."""
        self._stopping = True
        writer = self._writer
        if writer is not None:
            if leave and self.connected.is_set():
                self.send(p.Leave())
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), LEAVE_TIMEOUT_SECONDS)
            writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait_for(self, predicate: Callable[[Snapshot], bool], timeout: float) -> Snapshot:
        """Wait until the accepted snapshot satisfies `predicate`."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: predicate(self.snapshot)), timeout
            )
        return self.snapshot

    async def subscribe(self, *references: str, timeout: float | None = None) -> None:
        """Ask for the outbound config of services; with a timeout, wait until it arrived."""
        new = [r for r in references if r not in self.subscriptions]
        self.subscriptions.update(new)
        if new and self._writer is not None:
            for start in range(0, len(new), p.MAX_SUBSCRIPTIONS):
                self.send(p.Subscribe(add=new[start : start + p.MAX_SUBSCRIPTIONS]))
        if timeout is not None:
            await self.wait_for(
                lambda snap: all(
                    any(
                        n.startswith(("route/", "unresolved/"))
                        and (
                            n == f"unresolved/{r}"
                            or r in snap[n].body.get("hosts", ())
                            or r == snap[n].body.get("vip")
                        )
                        for n in snap
                    )
                    for r in references
                ),
                timeout,
            )

    # --- persistence ----------------------------------------------------------------------------

    def _load_from_disk(self) -> None:
        if self._state_dir is None:
            return
        path = self._state_dir / SNAPSHOT_FILE
        try:
            saved = json.loads(path.read_text())
            snapshot = {e["name"]: msgspec.convert(e, type=p.Entry) for e in saved["entries"]}
            self._on_update(snapshot, saved["version"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, msgspec.ValidationError) as exc:
            log.warning("ignoring unreadable saved snapshot %s: %s", path, exc)
            return
        self.snapshot, self.version = snapshot, saved["version"]
        self.subscriptions |= set(saved.get("subscriptions", []))
        self.loaded_from_disk = True
        log.info("serving the last-known-good snapshot %s from %s", self.version, path)

    def _save_to_disk(self) -> None:
        if self._state_dir is None:
            return
        self._state_dir.mkdir(parents=True, exist_ok=True)
        path = self._state_dir / SNAPSHOT_FILE
        tmp = path.with_suffix(".tmp")
        data = {
            "version": self.version,
            "saved_at": time.time(),
            "subscriptions": sorted(self.subscriptions),
            "entries": [msgspec.to_builtins(e) for e in self.snapshot.values()],
        }
        # Write, flush to disk, then rename: a crash leaves the old or the new file whole.
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    # --- the stream ----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_INITIAL_SECONDS
        index = 0
        while not self._stopping:
            address = self._controllers[index % len(self._controllers)]
            try:
                await self._session(address)
                backoff = BACKOFF_INITIAL_SECONDS
            except ControllerRefused as exc:
                log.error("%s", exc)
            except (OSError, ssl.SSLError, TimeoutError, ProtocolViolation) as exc:
                log.info("discovery stream to %s:%d lost: %s", address.host, address.port, exc)
            finally:
                self.connected.clear()
                self._writer = None
                for callback in self.on_stream_lost:
                    callback()
            if self._stopping:
                break
            index += 1
            # Jitter spreads reconnects of many proxies after a controller restart.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _session(self, address: ControllerAddress) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address.host,
                address.port,
                ssl=self._tls,
                server_hostname=(self._server_name or address.host) if self._tls else None,
            ),
            CONNECT_TIMEOUT_SECONDS,
        )
        self._writer = writer
        heartbeat: asyncio.Task[None] | None = None
        try:
            # Both at once: the resume costs no round trip, but the controller reads it
            # only once the hello proved who we are.
            self.send(p.Hello(node=self.node, token=self._token, registered=self.registered))
            self.send(self._resume())
            decoder = p.FrameDecoder()
            self._last_heard = time.monotonic()
            while True:
                if heartbeat is None:  # before the welcome: bound the wait directly
                    data = await asyncio.wait_for(reader.read(65536), CONNECT_TIMEOUT_SECONDS)
                else:  # afterwards the heartbeat task watches for silence
                    data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("controller closed the stream")
                self._last_heard = time.monotonic()
                for payload in decoder.feed(data):
                    message = p.parse_server_message(payload)
                    if isinstance(message, p.Welcome):
                        self._heartbeat_interval = message.heartbeat_interval
                        self.trust_domain = message.trust_domain
                        heartbeat = asyncio.create_task(self._heartbeats())
                        self.connected.set()
                    elif isinstance(message, p.Push):
                        await self._apply(message)
                    elif isinstance(message, p.Refusal):
                        raise ControllerRefused(message.code, message.message)
                    elif isinstance(message, p.CertificateIssued | p.CertificateRefused):
                        self._answer_certificate(message)
                    elif isinstance(message, p.TrustBundle):
                        self._new_trust_bundle(message)
                    elif isinstance(message, p.TapStart | p.TapStop):
                        self._tap(message)
                    elif isinstance(message, p.MessageRefused):
                        self.refused[message.reason] += 1
                        log.warning(
                            "the controller refused our %s message (%s): %s",
                            message.refused or "unreadable",
                            message.reason,
                            message.message,
                        )
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            writer.close()

    def _resume(self) -> p.Resume:
        """What we hold and want, within the protocol's bounds: the controller refuses
        more subscriptions than it allows anyway, and a snapshot too large to list
        entry by entry is fetched whole instead."""
        held = {name: e.version for name, e in self.snapshot.items()}
        if len(held) > p.MAX_HELD_ENTRIES:
            held = {}
        return p.Resume(
            version=self.version if held else "",
            held=held,
            subscriptions=sorted(self.subscriptions)[: p.MAX_SUBSCRIPTIONS],
        )

    async def _heartbeats(self) -> None:
        """Send heartbeats; close the stream when the controller has been silent for
        three intervals (it answers every heartbeat), so the reconnect logic takes over.
        One timer per stream, rather than a timeout around every read."""
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            if time.monotonic() - self._last_heard > 3 * self._heartbeat_interval:
                log.info("the controller went silent; reconnecting")
                if self._writer is not None:
                    self._writer.close()
                return
            self.send(p.Heartbeat())

    # --- certificates ------------------------------------------------------------------------

    def _new_trust_bundle(self, message: p.TrustBundle) -> None:
        if self.trust_bundle == message:
            return
        self.trust_bundle = message
        if self._trust_bundle_path is not None:
            previous = self._bundle_pem
            self._bundle_pem = message.bundle
            try:
                self._tls = self._own_context()  # for the next connection
            except ssl.SSLError as exc:
                self._bundle_pem = previous
                log.error("the controller sent a trust bundle we cannot load: %s", exc)
                return
        for callback in self.on_trust_bundle:
            callback(message)

    def present_certificate(self, certificate_pem: bytes, key_pem: bytes) -> None:
        """Authenticate to the controller with this SVID from the next connection on
        (a join token is good once; the certificate is what a reconnect proves)."""
        self._token = None  # spent on our first certificate: the SVID speaks for us now
        if self._trust_bundle_path is None:
            return  # a shared context is not ours to put a certificate in
        previous = self._identity
        self._identity = (certificate_pem, key_pem)
        try:
            self._tls = self._own_context()
        except ssl.SSLError as exc:
            self._identity = previous
            log.error("cannot present our certificate to the controller: %s", exc)

    def _first_context(self, path: Path) -> ssl.SSLContext:
        """The first context, from the bundle file: a file that is missing or holds no
        certificate is the operator's to fix, said in a sentence."""
        try:
            return self._own_context()
        except (OSError, ssl.SSLError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DiscoveryError(
                f"cannot use the trust bundle {path}: {why}; give the mesh's root CA with "
                "--trust-bundle FILE (or MYC_TRUST_BUNDLE); its default is HOME/ca/root.pem"
            ) from exc

    def _own_context(self) -> ssl.SSLContext:
        """Trusting the latest bundle (the file's until the controller sends one), and
        presenting our SVID once we hold one."""
        if self._bundle_pem is not None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self._bundle_pem)
        else:
            assert isinstance(self._trust_bundle_path, Path)
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self._trust_bundle_path)
            )
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        if self._identity is not None:
            load_certificate_chain(context, *self._identity)
        return context

    async def request_certificate(
        self,
        csr_pem: bytes,
        token: str = "",
        timeout: float = CONNECT_TIMEOUT_SECONDS,
        *,
        current: bytes = b"",
        proof: str = "",
    ) -> p.CertificateIssued:
        """Have the controller sign `csr_pem` for the identity the join token names, or
        (renewal) that of the `current` SVID, whose key signed the CSR into `proof`.
        Raises `CertificateRefusedError` (with the controller's reason) or TimeoutError."""
        async with asyncio.timeout(timeout):
            await self.connected.wait()
            self._next_request_id += 1
            request_id = self._next_request_id
            answer: asyncio.Future[p.CertificateIssued] = asyncio.get_running_loop().create_future()
            self._certificate_requests[request_id] = answer
            try:
                self.send(
                    p.CertificateRequest(
                        request_id=request_id,
                        csr=csr_pem.decode(),
                        token=token,
                        current=current.decode(),
                        proof=proof,
                    )
                )
                return await answer
            finally:
                self._certificate_requests.pop(request_id, None)

    def _answer_certificate(self, message: p.CertificateIssued | p.CertificateRefused) -> None:
        waiter = self._certificate_requests.get(message.request_id)
        if waiter is None or waiter.done():
            return
        if isinstance(message, p.CertificateIssued):
            waiter.set_result(message)
        else:
            waiter.set_exception(CertificateRefusedError(message.reason, message.message))

    def _tap(self, message: p.TapStart | p.TapStop) -> None:
        if self.on_tap is not None:
            self.on_tap(message)
        elif isinstance(message, p.TapStart):  # a proxy that cannot tap says so at once
            self.send(p.TapEvents(id=message.id, ended="unsupported"))

    def send(self, message: p.ClientMessage) -> bool:
        """Put a message on the stream; False when there is no stream to put it on."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(p.encode(message))
            return True
        return False

    async def _apply(self, push: p.Push) -> None:
        candidate: Snapshot = {} if push.full else dict(self.snapshot)
        for name in push.removed:
            candidate.pop(name, None)
        for entry in push.resources:
            candidate[entry.name] = entry
        try:
            self._on_update(candidate, push.version)
        except Exception as exc:  # whatever the proxy objects to becomes the NACK reason
            reason = _reason(exc)[: p.REASON_CHARS]
            self.last_nack = reason
            self.nacks += 1
            log.warning("rejecting config %s: %s", push.version, reason)
            self.send(p.Nack(nonce=push.nonce, version=push.version, reason=reason))
            return
        self.snapshot, self.version = candidate, push.version
        self.last_nack = None
        self.send(p.Ack(nonce=push.nonce, version=push.version))
        try:
            self._save_to_disk()
        except OSError as exc:
            log.warning("could not persist the snapshot (it stays in memory): %s", exc)
        async with self._changed:
            self._changed.notify_all()


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def entry_bodies(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    return {name: entry.body for name, entry in snapshot.items()}
