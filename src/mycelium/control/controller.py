"""The controller: store, mirror, compiler, discovery server and REST API wired together.

Start-up order matters and is the same every time: open the store, load everything
under `/mycelium/` into the mirror, bind both listeners (so a port clash fails at once),
then follow the store's watch from the revision the listing was read at — so no change
between the listing and the watch is missed — and last give a vip to any Service stored
without one. Every change updates the mirror and tells
the discovery server which topics it touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import time
from collections import Counter

from aiohttp import web

from mycelium.api import KINDS
from mycelium.control import api_limits
from mycelium.control.api_guard import ApiGuard, GuardedSite
from mycelium.control.apply import assign_missing_vips
from mycelium.control.ca import CertificateAuthority
from mycelium.control.client_limits import ClientLimits
from mycelium.control.compiler.common import REGISTERED_BY
from mycelium.control.compiler.topics import topics_of_change
from mycelium.control.config import ControllerConfig, ensure_admin_token
from mycelium.control.connection_limits import ConnectionLimits
from mycelium.control.discovery_auth import StreamCredentials, StreamRefused, authenticate_stream
from mycelium.control.discovery_server import DiscoveryServer
from mycelium.control.join_tokens import JoinTokens, load_or_create_key
from mycelium.control.metrics import ControllerMetrics
from mycelium.control.refusals import RefusalLog
from mycelium.control.rest_api import build_app
from mycelium.control.root_rotation import RootStillInUse, proxies_cut_off
from mycelium.control.state import MeshState
from mycelium.control.svids import SvidService
from mycelium.discovery.protocol import Hello, NodeInfo, TrustBundle
from mycelium.store import (
    CompactedError,
    LeaseNotFound,
    Store,
    StoreError,
    TimedStore,
    open_store,
)

log = logging.getLogger(__name__)

PREFIX = "/mycelium/"
STREAM_FAILURES_PER_SECOND = 0.2
STREAM_FAILURE_BURST = 10
# After a watch failure (store unreachable), retry at this pace.
WATCH_RETRY_SECONDS = 1.0


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.state = MeshState()
        self.admin_token = ""
        self.started_at = time.monotonic()
        self.discovery_port = config.discovery_port
        self.api_port = config.api_port
        self._store: Store | None = None
        self._discovery: DiscoveryServer | None = None
        self._runner: web.AppRunner | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._ca: CertificateAuthority | None = None
        self._join_tokens: JoinTokens | None = None
        self._svids: SvidService | None = None
        self._serving_tls: ssl.SSLContext | None = None
        # Failed discovery authentications per client address: a few at once, then one
        # every few seconds.
        self._stream_failures = ClientLimits(STREAM_FAILURES_PER_SECOND, STREAM_FAILURE_BURST)
        self.stream_refusals: Counter[str] = Counter()
        self.streams_proven: Counter[str] = Counter()  # by certificate, join_token...
        # What the REST port's guard refused (connections over a cap, slow or oversized
        # heads and bodies), by reason; /metrics exports the counts.
        self.api_refusals = RefusalLog(logging.getLogger("mycelium.control.api"), "API connection")
        self.synced = asyncio.Event()  # set once the mirror has caught up at start
        self.metrics = ControllerMetrics()  # served at /metrics

    @property
    def ca(self) -> CertificateAuthority:
        assert self._ca is not None, "controller not started"
        return self._ca

    @property
    def join_tokens(self) -> JoinTokens:
        assert self._join_tokens is not None, "controller not started"
        return self._join_tokens

    @property
    def svids(self) -> SvidService:
        assert self._svids is not None, "controller not started"
        return self._svids

    @property
    def store(self) -> Store:
        assert self._store is not None, "controller not started"
        return self._store

    @property
    def discovery(self) -> DiscoveryServer:
        assert self._discovery is not None, "controller not started"
        return self._discovery

    async def start(self) -> None:
        cfg = self.config
        cfg.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.admin_token = ensure_admin_token(cfg.token_path)
        # Every store call the controller makes goes through here, and is timed.
        self._store = TimedStore(await open_store(cfg.effective_store_url), self.metrics)
        revision = await self._load_all()
        self._ca = CertificateAuthority(cfg.ca_dir, cfg.trust_domain)
        self._join_tokens = JoinTokens(
            load_or_create_key(cfg.ca_dir / "join-token.key"), cfg.trust_domain
        )
        self._svids = SvidService(
            self._ca, self._join_tokens, dt.timedelta(seconds=cfg.svid_ttl_seconds)
        )
        self._discovery = DiscoveryServer(
            self.state,
            register=self._register,
            keep_alive=self._keep_alive,
            revoke=self._revoke,
            issue_svid=self.svids.issue,
            renew_svid=self.svids.renew,
            trust_bundle=self._trust_bundle,
            authenticate=self._authenticate_stream,
            trust_domain=cfg.trust_domain,
            heartbeat_seconds=cfg.heartbeat_seconds,
            lease_ttl_seconds=cfg.lease_ttl_seconds,
            observer=self.metrics,
            limits=cfg.discovery_limits,
        )
        self.metrics.attach(self)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_3
        # A proxy with an SVID presents it; one still on its join token presents none.
        # The roots only gain here (a live context cannot forget one): who is let in is
        # decided by `_authenticate_stream` against the CA in force.
        tls.verify_mode = ssl.CERT_OPTIONAL
        tls.load_verify_locations(cadata=self.ca.bundle_pem.decode())
        self._serving_tls = tls
        self._load_serving_certificate()
        self.discovery_port = await self._discovery.start(
            cfg.discovery_host, cfg.discovery_port, tls
        )
        guard = ApiGuard(
            ConnectionLimits(cfg.api_limits.connections, cfg.api_limits.connections_per_address),
            self.api_refusals,
            head_seconds=cfg.api_limits.request_head_seconds,
        )
        self._runner = web.AppRunner(
            build_app(self, guard.middleware()),
            access_log=None,
            shutdown_timeout=2.0,
            # aiohttp's protocol takes these for every connection (see api_limits).
            keepalive_timeout=cfg.api_limits.keepalive_seconds,
            lingering_time=api_limits.LINGER_SECONDS,
            max_line_size=api_limits.MAX_REQUEST_LINE_BYTES,
            max_field_size=api_limits.MAX_HEADER_FIELD_BYTES,
            max_headers=api_limits.MAX_HEADERS,
            logger=guard.parser_log,
        )
        await self._runner.setup()
        # Every connection passes the guard before aiohttp reads from it.
        await GuardedSite(self._runner, cfg.api_host, cfg.api_port, guard).start()
        for address in self._runner.addresses:  # the real port when 0 was asked for
            self.api_port = int(address[1])
        self._watch_task = asyncio.create_task(self._follow(revision + 1))
        # Services stored before vips were allocated get one now (the watch above
        # carries the change to the mirror and the proxies).
        for failure in await assign_missing_vips(self.store):
            log.error("a Service has no usable vip: %s", failure)
        log.info(
            "controller ready: api http://%s:%d, discovery %s:%d, store %s",
            cfg.api_host,
            self.api_port,
            cfg.discovery_host,
            self.discovery_port,
            self.store.name,
        )

    # --- the CA -------------------------------------------------------------------------------

    def _trust_bundle(self) -> TrustBundle:
        ca = self.ca
        return TrustBundle(
            bundle=ca.bundle_pem.decode(),
            signer=ca.material.signer_key_id,
            renew_within=self.config.rotation_spread_seconds,
        )

    def _authenticate_stream(self, hello: Hello, credentials: StreamCredentials) -> str | None:
        """None to let the stream in; otherwise why not (sent to the proxy). Failures
        are counted, logged with the peer and the claim (never a credential), and
        limited per client address, so guessing tokens gets slow."""
        now = time.monotonic()
        if self._stream_failures.would_refuse(credentials.peer, now):
            self.stream_refusals["rate_limited"] += 1
            return "too many failed attempts from this address; wait and retry"
        try:
            proven_by = authenticate_stream(
                hello,
                credentials,
                ca=self.ca,
                join_tokens=self.join_tokens,
                allow_anonymous=self.config.allow_anonymous_proxies,
            )
        except StreamRefused as exc:
            self._stream_failures.admit(credentials.peer, now)
            self.stream_refusals[exc.reason] += 1
            node = hello.node
            log.warning(
                "refused a discovery stream from %s claiming %s/%s (%s): %s",
                credentials.peer,
                node.namespace,
                node.service_account,
                node.id,
                exc.reason,
            )
            return str(exc)
        self.streams_proven[proven_by] += 1
        return None

    def _load_serving_certificate(self) -> None:
        """(Re)issue the discovery listener's certificate from the signing CA. New
        handshakes use it; streams already open keep theirs."""
        serving = self.ca.issue_serving_certificate([self.config.discovery_host])
        assert self._serving_tls is not None, "controller not started"
        self._serving_tls.load_cert_chain(serving.certificate, serving.key)

    def reload_ca(self, *, force: bool = False) -> CertificateAuthority:
        """Read the CA files again (a root rotation step, a new intermediate) and, if
        they fit, sign with them and send the bundle to every proxy. Raises
        `CaConfigError` or `RootStillInUse`, leaving the CA in force untouched."""
        fresh = self.ca.reload()
        holders = proxies_cut_off(self.ca.roots, fresh.roots, self.svids.latest, time.time())
        if holders and not force:
            raise RootStillInUse(holders)
        self._ca = fresh
        self.svids.ca = fresh
        assert self._serving_tls is not None
        self._serving_tls.load_verify_locations(cadata=fresh.bundle_pem.decode())
        self._load_serving_certificate()
        told = self.discovery.broadcast_trust_bundle()
        log.info(
            "CA reloaded: %d root(s) trusted, signing with %s; bundle sent to %d proxies",
            len(fresh.roots),
            fresh.signing.subject.rfc4514_string(),
            told,
        )
        return fresh

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch_task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._discovery is not None:
            await self._discovery.stop()
        if self._store is not None:
            await self._store.close()

    # --- mirroring the store -------------------------------------------------------------

    async def _load_all(self) -> int:
        listing = await self.store.range(PREFIX)
        fresh = MeshState()
        for kv in listing.kvs:
            try:
                fresh.put_stored(kv.key, kv.value, kv.mod_revision)
            except Exception as exc:  # a value written by a newer version, or corrupt
                log.error("ignoring unreadable resource at %s: %s", kv.key, exc)
        fresh.revision = listing.revision
        self.state = fresh
        if self._discovery is not None:
            self._discovery.replace_state(fresh)
        return listing.revision

    async def _follow(self, from_revision: int) -> None:
        self.synced.set()
        while True:
            try:
                async for event in self.store.watch(PREFIX, from_revision):
                    self._apply_event(event.type, event.key, event.value, event.revision)
                    from_revision = event.revision + 1
            except CompactedError:
                log.warning("watch history compacted; re-reading the whole store")
                from_revision = await self._load_all() + 1
            except StoreError as exc:
                log.warning("store watch failed (%s); retrying", exc)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    def _apply_event(self, kind: str, key: str, value: bytes, revision: int) -> None:
        try:
            if kind == "put":
                old, new = self.state.put_stored(key, value, revision)
                topics = topics_of_change(self.state, old, new)
            else:
                old = self.state.delete(key, revision)
                topics = topics_of_change(self.state, old, None)
        except Exception as exc:
            log.error("ignoring unreadable resource at %s: %s", key, exc)
            return
        self.discovery.notify(topics)

    # --- the registry: workloads held by leases ---------------------------------------------

    async def _register(self, node: NodeInfo) -> int | None:
        assert node.workload is not None
        assert node.address is not None
        workload = KINDS["Workload"].model_validate(
            {
                "apiVersion": "mycelium.io/v1",
                "kind": "Workload",
                "metadata": {
                    "name": node.workload,
                    "namespace": node.namespace,
                    "labels": node.labels,
                    "annotations": {REGISTERED_BY: node.id},
                },
                "spec": {
                    "address": node.address,
                    "serviceAccount": node.service_account,
                    "ports": [{"port": port} for port in node.ports],
                },
            }
        )
        try:
            lease = await self.store.grant_lease(self.config.lease_ttl_seconds)
            await self.store.put(workload.key, workload.to_json_bytes(), lease=lease)
        except StoreError as exc:
            log.error("could not register workload %s: %s", workload.ref, exc)
            return None
        return lease

    async def _revoke(self, lease: int) -> None:
        try:
            await self.store.revoke_lease(lease)
        except StoreError as exc:  # the lease will expire by itself
            log.warning("could not deregister a leaving workload: %s", exc)

    async def _keep_alive(self, lease: int) -> bool:
        try:
            await self.store.keep_alive(lease)
        except LeaseNotFound:
            return False
        except StoreError as exc:
            log.warning("lease keep-alive failed: %s", exc)
        return True
