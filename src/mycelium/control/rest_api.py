"""The controller's REST API on 15014: apply, get, list, delete, watch, status, and
identity (join tokens, SVIDs).

Every `/api/` route needs `Authorization: Bearer <admin token>`. `/identity/v1/svids`
takes a join token instead (one CSR per token); it moves onto the TLS discovery stream
once proxies fetch their SVIDs themselves. `/metrics` (the controller's own, for
Prometheus) needs no token and is not rate limited: scrapers carry no credentials, and
it tells nothing about the config beyond counts. Nor does `/prometheus/targets`
(Prometheus' HTTP service discovery of every proxy's metrics endpoint), which tells
where metrics are served and which pod serves them, nothing of the config. Errors are JSON objects
`{"error": <code>, "message": <sentence>, "details": [...]}` so the CLI can print the
sentence and scripts can branch on the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from mycelium import __version__
from mycelium.api import KINDS, resolve_kind
from mycelium.api.errors import ResourceValidationError, UnknownKind
from mycelium.control.apply import SourceFile, apply_resources, delete_resource, validate_files
from mycelium.control.ca import CertificateAuthority
from mycelium.control.ca_material import key_id
from mycelium.control.client_limits import ClientLimits, retry_after_header
from mycelium.control.config import ControllerConfig
from mycelium.control.dashboard import DashboardSource, dashboard_routes
from mycelium.control.dashboard.logins import CODE_SECONDS, COOKIE, DashboardLogins
from mycelium.control.join_tokens import JoinTokens
from mycelium.control.metrics import CONTENT_TYPE, ControllerMetrics
from mycelium.control.prometheus_sd import scrape_targets
from mycelium.control.refusals import RefusalLog
from mycelium.control.root_rotation import RootStillInUse
from mycelium.control.svids import SvidService
from mycelium.control.tap import (
    DEFAULT_TAP_SECONDS,
    MAX_ACTIVE_TAPS,
    MAX_TAP_SECONDS,
    TARGET_FORMS,
    ActiveTap,
    TapTarget,
    select,
)
from mycelium.control.traffic import window_seconds
from mycelium.discovery import protocol as p
from mycelium.errors import ConfigError, MeshError
from mycelium.store import CompactedError, StoreError

log = logging.getLogger("mycelium.control.api")

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Per client address: the API is for people and scripts (a watch is one request); the
# identity endpoints are for proxies, which need one certificate a day each.
API_RATE_PER_SECOND = 50.0
API_BURST = 100
IDENTITY_RATE_PER_SECOND = 2.0
IDENTITY_BURST = 10

# A tap with no traffic still writes an empty line this often: it finds out that the
# client left (a write fails), and keeps proxies between us from timing the stream out.
TAP_KEEPALIVE_SECONDS = 5.0

# An apply body is YAML text; a few MiB is far beyond any sane set of resources.
MAX_BODY_BYTES = 8 * 1024 * 1024


class ControllerView(DashboardSource, Protocol):
    """What the API reads from the controller and asks of it (the dashboard it serves
    reads a part). The controller hands itself to `build_app`; naming only this keeps
    the API from importing the controller, which imports the API to serve it."""

    @property
    def config(self) -> ControllerConfig: ...

    @property
    def admin_token(self) -> str: ...

    @property
    def started_at(self) -> float: ...  # time.monotonic() at construction

    @property
    def discovery_port(self) -> int: ...

    @property
    def api_refusals(self) -> RefusalLog: ...

    @property
    def ca(self) -> CertificateAuthority: ...

    @property
    def svids(self) -> SvidService: ...

    @property
    def join_tokens(self) -> JoinTokens: ...

    @property
    def metrics(self) -> ControllerMetrics: ...

    def reload_ca(self, *, force: bool = False) -> CertificateAuthority: ...


def error(status: int, code: str, message: str, details: list[Any] | None = None) -> web.Response:
    body = {"error": code, "message": message, "details": details or []}
    return web.json_response(body, status=status)


def build_app(controller: ControllerView, *outermost: Middleware) -> web.Application:
    """The app; `outermost` middlewares see every request first (the REST port's guard
    is one)."""
    api_limits = ClientLimits(API_RATE_PER_SECOND, API_BURST)
    identity_limits = ClientLimits(IDENTITY_RATE_PER_SECOND, IDENTITY_BURST)
    logins = DashboardLogins()

    async def mint_dashboard_login(request: web.Request) -> web.Response:
        """A one-time link that logs a browser into the dashboard (`myc dashboard`)."""
        code = logins.mint_code(time.monotonic())
        return web.json_response(
            {"path": f"/dashboard/login?code={code}", "expiresInSeconds": int(CODE_SECONDS)}
        )

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or "?"
        if request.path.startswith(("/api/", "/identity/")):
            limits = identity_limits if request.path.startswith("/identity/") else api_limits
            wait = limits.admit(peer, time.monotonic())
            if wait is not None:
                response = error(
                    429,
                    "rate_limited",
                    f"too many requests from {peer}; retry in {retry_after_header(wait)} s",
                )
                response.headers["Retry-After"] = retry_after_header(wait)
                return response
        if request.path.startswith("/dashboard/api/"):
            header = request.headers.get("Authorization", "")
            supplied = header.removeprefix("Bearer ").strip()
            token_ok = bool(supplied) and hmac.compare_digest(supplied, controller.admin_token)
            if not token_ok and not logins.admits(request.cookies.get(COOKIE), time.monotonic()):
                return error(
                    401,
                    "login_required",
                    "the dashboard needs a login: run `myc dashboard` and open the link "
                    "it prints (or send the admin token)",
                )
        if request.path.startswith("/api/"):
            header = request.headers.get("Authorization", "")
            supplied = header.removeprefix("Bearer ").strip()
            if not supplied or not hmac.compare_digest(supplied, controller.admin_token):
                # Who and what, never the token they tried.
                log.warning(
                    "refused %s %s from %s: no valid admin token",
                    request.method,
                    request.path,
                    peer,
                )
                return error(
                    401,
                    "unauthorized",
                    "a valid admin token is required: myc reads it from "
                    f"{controller.config.token_path} (or MYC_TOKEN)",
                )
        # Only now, the token accepted (or the route's own proof in the body), is a
        # body read: a refused client's never is.
        if request.body_exists and request.path.startswith(("/api/", "/identity/")):
            refused = await _read_body(request, controller)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except StoreError as exc:
            return error(503, "store_unavailable", str(exc))

    app = web.Application(middlewares=[*outermost, authenticate], client_max_size=MAX_BODY_BYTES)
    api = RestApi(controller)
    app.on_shutdown.append(api.end_watches)
    app.add_routes(
        [
            web.get("/healthz", api.healthz),
            web.get("/version", api.version),
            web.get("/metrics", api.metrics),
            web.get("/prometheus/targets", api.prometheus_targets),
            web.post("/api/v1/apply", api.apply),
            web.get("/api/v1/resources", api.list),
            web.get("/api/v1/resources/{kind}/{namespace}/{name}", api.get),
            web.delete("/api/v1/resources/{kind}/{namespace}/{name}", api.delete),
            web.get("/api/v1/watch", api.watch),
            web.get("/api/v1/tap", api.tap),
            web.get("/api/v1/status", api.status),
            web.get("/api/v1/stat", api.stat),
            web.post("/api/v1/join-tokens", api.mint_join_token),
            web.post("/api/v1/dashboard-logins", mint_dashboard_login),
            web.get("/api/v1/check", api.check),
            web.get("/api/v1/ca", api.ca_status),
            web.post("/api/v1/ca/reload", api.reload_ca),
            # Authenticated by the join token it carries, not the admin token.
            web.post("/identity/v1/svids", api.issue_svid),
        ]
    )
    # Read-only: a logged-in browser's, or the admin token's (see control/dashboard).
    app.add_routes(dashboard_routes(controller, logins, tap=api.tap))
    return app


async def _read_body(request: web.Request, controller: ControllerView) -> web.Response | None:
    """Read the whole body into the request (handlers then parse it from memory), within
    MAX_BODY_BYTES and the body deadline. A refusal's answer when it is over either;
    the connection then closes (the guard's middleware sees the body unfinished)."""
    peer = request.remote or "?"
    refusals = controller.api_refusals
    seconds = controller.config.api_limits.body_seconds
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:  # refused before a byte of it
        refusals.refuse("body_too_large", peer, f"{length} bytes announced", time.monotonic())
        return _too_large()
    try:
        async with asyncio.timeout(seconds):
            await request.read()
    except TimeoutError:
        refusals.refuse(
            "body_timeout",
            peer,
            f"{request.method} {request.path}: the body did not arrive within {seconds:g} s",
            time.monotonic(),
        )
        return error(408, "body_timeout", f"the request body must arrive within {seconds:g} s")
    except web.HTTPRequestEntityTooLarge:
        refusals.refuse(
            "body_too_large", peer, "a body without a length ran over", time.monotonic()
        )
        return _too_large()
    return None


def _too_large() -> web.Response:
    return error(413, "body_too_large", f"a request body may hold at most {MAX_BODY_BYTES} bytes")


def _with_revisions(value: bytes, mod_revision: int, create_revision: int) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(value)
    obj.setdefault("metadata", {})
    obj["metadata"]["revision"] = mod_revision
    obj["metadata"]["createRevision"] = create_revision
    return obj


def _kind_prefix(kind: str | None, namespace: str | None) -> str:
    if kind is None:
        return "/mycelium/"
    prefix = f"/mycelium/{kind.lower()}/"
    return prefix + f"{namespace}/" if namespace else prefix


def _ca_certificates(c: ControllerView) -> list[tuple[str, Any]]:
    ca = c.ca
    found: list[tuple[str, Any]] = [("root", root) for root in ca.roots]
    found += [("intermediate", cert) for cert in ca.material.chain]
    if ca.signing not in ca.roots:
        found.append(("signer", ca.signing))
    return found


def ca_document(c: ControllerView) -> dict[str, Any]:
    """The CA as `myc ca status` shows it: roots, signer, and how many live workload
    certificates chain to each root (a root may go once none does)."""
    now = time.time()
    in_use: dict[str, int] = {}
    for latest in c.svids.latest.values():
        if latest.expires_at > now:
            in_use[latest.root] = in_use.get(latest.root, 0) + 1
    ca = c.ca

    def described(cert: Any) -> dict[str, Any]:
        return {
            "keyId": key_id(cert),
            "subject": cert.subject.rfc4514_string(),
            "notAfter": cert.not_valid_after_utc.timestamp(),
        }

    return {
        "trustDomain": ca.trust_domain,
        "roots": [
            {**described(root), "certificatesInUse": in_use.get(key_id(root), 0)}
            for root in ca.roots
        ],
        "signer": {
            **described(ca.signing),
            "root": ca.root_key_id,
            "chain": [described(cert) for cert in ca.material.chain],
        },
        "connectedProxies": len(c.discovery.sessions),
    }


class RestApi:
    def __init__(self, controller: ControllerView) -> None:
        self._c = controller
        self._watches: set[asyncio.Task[Any]] = set()

    async def end_watches(self, app: web.Application) -> None:
        """Watch streams never end by themselves; end them so shutdown does not wait."""
        for task in list(self._watches):
            task.cancel()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": __version__, "store": self._c.store.name})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._c.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def prometheus_targets(self, request: web.Request) -> web.Response:
        """Prometheus HTTP service discovery (control/prometheus_sd.py): like /metrics,
        no token, since scrapers carry none; it lists where metrics are served."""
        nodes = [session.node for session in self._c.discovery.sessions.values()]
        return web.json_response(scrape_targets(nodes, request.host))

    async def apply(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            files = [SourceFile(str(f["name"]), str(f["content"])) for f in body["files"]]
            dry_run = bool(body.get("dryRun", False))
        except (ValueError, KeyError, TypeError):
            return error(
                400,
                "bad_request",
                'the body must be JSON {"files": [{"name": ..., "content": ...}], "dryRun": false}',
            )
        try:
            resources = validate_files(files, self._c.state)
            # Also refuses a Service whose vip another Service holds.
            result = await apply_resources(self._c.store, resources, dry_run=dry_run)
        except ResourceValidationError as exc:
            details = [dataclasses.asdict(issue) for issue in exc.issues]
            return error(422, "invalid", str(exc), details)
        return web.json_response(
            {
                "revision": result.revision,
                "results": [
                    {
                        "kind": r.kind,
                        "namespace": r.namespace,
                        "name": r.name,
                        "action": r.action,
                        "changes": [
                            {"path": path, "from": old, "to": new} for path, old, new in r.changes
                        ],
                    }
                    for r in result.results
                ],
            }
        )

    def _kind(self, name: str) -> str:
        return resolve_kind(name).model_fields["kind"].default  # type: ignore[no-any-return]

    async def list(self, request: web.Request) -> web.Response:
        kind_name = request.query.get("kind")
        namespace = request.query.get("namespace") or None
        try:
            kind = self._kind(kind_name) if kind_name else None
        except UnknownKind as exc:
            return error(400, "unknown_kind", str(exc))
        listing = await self._c.store.range(_kind_prefix(kind, namespace))
        items = []
        for kv in listing.kvs:
            parts = kv.key.split("/")
            if kind is None and namespace is not None and parts[3] != namespace:
                continue
            items.append(_with_revisions(kv.value, kv.mod_revision, kv.create_revision))
        return web.json_response({"revision": listing.revision, "items": items})

    def _key(self, request: web.Request) -> tuple[str, str] | web.Response:
        try:
            model = resolve_kind(request.match_info["kind"])
        except UnknownKind as exc:
            return error(400, "unknown_kind", str(exc))
        kind = model.model_fields["kind"].default
        ns, name = request.match_info["namespace"], request.match_info["name"]
        return kind, f"/mycelium/{kind.lower()}/{ns}/{name}"

    async def get(self, request: web.Request) -> web.Response:
        found = self._key(request)
        if isinstance(found, web.Response):
            return found
        kind, key = found
        kv = await self._c.store.get(key)
        if kv is None:
            return self._not_found(kind, request)
        return web.json_response(_with_revisions(kv.value, kv.mod_revision, kv.create_revision))

    async def delete(self, request: web.Request) -> web.Response:
        found = self._key(request)
        if isinstance(found, web.Response):
            return found
        kind, key = found
        revision = await delete_resource(self._c.store, key)
        if revision is None:
            return self._not_found(kind, request)
        return web.json_response({"revision": revision})

    def _not_found(self, kind: str, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        where = "" if ns == "_" else f' in namespace "{ns}"'
        return error(404, "not_found", f'{kind} "{name}" not found{where}')

    async def watch(self, request: web.Request) -> web.StreamResponse:
        kind_name = request.query.get("kind")
        namespace = request.query.get("namespace") or None
        try:
            kind = self._kind(kind_name) if kind_name else None
            start = int(request.query["fromRevision"]) if "fromRevision" in request.query else None
        except UnknownKind as exc:
            return error(400, "unknown_kind", str(exc))
        except ValueError:
            return error(400, "bad_request", "fromRevision must be an integer")
        prefix = _kind_prefix(kind, namespace)
        events = self._c.store.watch(prefix, start)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        task = asyncio.current_task()
        assert task is not None
        self._watches.add(task)
        try:
            async for event in events:
                parts = event.key.split("/")
                if len(parts) != 5 or (kind is None and namespace and parts[3] != namespace):
                    continue
                resource = (
                    _with_revisions(event.value, event.revision, event.create_revision)
                    if event.type == "put"
                    else None
                )
                line = {
                    "type": event.type,
                    "revision": event.revision,
                    "kind": _kind_of_segment(parts[2]),
                    "namespace": parts[3],
                    "name": parts[4],
                    "resource": resource,
                }
                await response.write(json.dumps(line).encode() + b"\n")
        except CompactedError as exc:
            line = {"type": "error", "error": "compacted", "message": str(exc)}
            await response.write(json.dumps(line).encode() + b"\n")
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._watches.discard(task)
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
        return response

    async def tap(self, request: web.Request) -> web.StreamResponse:
        """Live requests from the proxies a target names, as NDJSON (see docs/tap.md)."""
        query = request.query
        discovery = self._c.discovery
        try:
            target = TapTarget.parse(query.get("target", ""))
            seconds = float(query.get("seconds", DEFAULT_TAP_SECONDS))
            start = p.TapStart(
                id=secrets.token_hex(8),
                filter=p.TapFilter(
                    path_prefix=query.get("path", ""),
                    method=query.get("method", "").upper(),
                    authority=query.get("authority", ""),
                    status=query.get("status", ""),
                    direction=query.get("direction", ""),
                ),
                max=int(query.get("max", 0)),
                seconds=min(seconds, MAX_TAP_SECONDS),
                rate=int(query.get("rate", p.DEFAULT_TAP_RATE)),
            )
        except (ValueError, msgspec.ValidationError) as exc:
            return error(400, "bad_request", str(exc))
        if len(discovery.taps) >= MAX_ACTIVE_TAPS:
            return error(429, "too_many_taps", f"{MAX_ACTIVE_TAPS} taps are running; retry later")
        namespace = query.get("namespace") or None
        nodes = [session.node for session in discovery.sessions.values()]
        proxies = select(target, namespace, nodes, self._c.state)
        if not proxies:
            where = f" in namespace {namespace}" if namespace else " in any namespace"
            what = "is connected" if target.kind == "all" else f"serves {target}"
            return error(
                404,
                "no_proxies",
                f"no proxy {what}{where}: check the name with `myc ps -A` or "
                f"`myc status` (a target is {TARGET_FORMS})",
            )
        state = self._c.state
        tap = ActiveTap(
            start,
            proxies,
            follows=lambda node: bool(select(target, namespace, [node], state)),
        )
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        discovery.start_tap(start, [node.id for node in proxies], tap)
        started = {
            "type": "started",
            "id": start.id,
            "target": str(target),
            "proxies": [
                {"id": n.id, "namespace": n.namespace, "workload": n.workload} for n in proxies
            ],
        }
        log.info("tap %s on %s: %d proxies", start.id, target, len(proxies))
        try:
            await response.write(json.dumps(started).encode() + b"\n")
            async with asyncio.timeout(start.seconds + TAP_KEEPALIVE_SECONDS):
                while True:
                    try:
                        line = await asyncio.wait_for(tap.lines.get(), TAP_KEEPALIVE_SECONDS)
                    except TimeoutError:
                        await response.write(b"\n")
                        continue
                    await response.write(json.dumps(line).encode() + b"\n")
                    if line["type"] == "end":
                        break
        except TimeoutError:  # the proxies should have said "deadline" by now
            tap.finish("deadline")
            with contextlib.suppress(Exception):
                await response.write(json.dumps(tap.lines.get_nowait()).encode() + b"\n")
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            tap.finish("client_left")
        finally:
            discovery.stop_tap(start.id, tap.running)
        return response

    async def status(self, request: web.Request) -> web.Response:
        c = self._c
        proxies = []
        for session in sorted(c.discovery.sessions.values(), key=lambda s: s.node.id):
            nack = session.last_nack
            proxies.append(
                {
                    "id": session.node.id,
                    "namespace": session.node.namespace,
                    "workload": session.node.workload,
                    "role": session.node.role,
                    "subscriptions": sorted(session.subscriptions),
                    "connectedSince": session.connected_since,
                    "versionSent": session.sent_version,
                    "versionAcked": session.acked_version,
                    "state": session.state,
                    "lastNack": {"version": nack[0], "reason": nack[1]} if nack else None,
                }
            )
        return web.json_response(
            {
                "controller": {
                    "version": __version__,
                    "store": c.store.name,
                    "revision": c.state.revision,
                    "uptimeSeconds": round(time.monotonic() - c.started_at, 1),
                    "discoveryAddress": f"{c.config.discovery_host}:{c.discovery_port}",
                    "pushes": c.discovery.pushes,
                    "acks": c.discovery.acks,
                    "nacks": c.discovery.nacks,
                },
                "proxies": proxies,
                "workloads": sum(1 for _ in c.state.of_kind("Workload")),
            }
        )

    async def stat(self, request: web.Request) -> web.Response:
        """Golden metrics over a window, per service, route or source workload (the
        proxies' telemetry reports): what `myc stat` and `myc top` show."""
        by = request.query.get("by", "service")
        if by not in ("service", "route", "workload"):
            return error(400, "bad_request", f"by={by!r}: choose service, route or workload")
        try:
            seconds = window_seconds(request.query.get("window", "60"))
        except ValueError:
            return error(400, "bad_request", "window must be a number of seconds")
        namespace = request.query.get("namespace")  # none: every namespace
        grouped = self._c.discovery.traffic.grouped(time.time(), seconds, by, namespace)
        rows = [{"name": name, **totals.summary(seconds)} for name, totals in grouped.items()]
        rows.sort(key=lambda row: (-float(row["rps"] or 0), str(row["name"])))
        return web.json_response(
            {"by": by, "window": seconds, "namespace": namespace, "rows": rows}
        )

    async def check(self, request: web.Request) -> web.Response:
        """The facts `myc check` judges: clocks, certificates, proxies' sync state."""
        c = self._c
        now = time.monotonic()
        proxies = [
            {
                "id": session.node.id,
                "state": session.state,
                "lastNack": session.last_nack[1] if session.last_nack else None,
                # how long the last push has gone unanswered (None: nothing pending)
                "pendingSeconds": round(now - session.pushed_at, 1)
                if session.in_flight is not None
                else None,
            }
            for session in sorted(c.discovery.sessions.values(), key=lambda s: s.node.id)
        ]
        return web.json_response(
            {
                "time": time.time(),
                "caExpiresAt": c.ca.signing.not_valid_after_utc.timestamp(),
                "caCertificates": [
                    {
                        "role": role,
                        "subject": cert.subject.rfc4514_string(),
                        "expiresAt": cert.not_valid_after_utc.timestamp(),
                    }
                    for role, cert in _ca_certificates(c)
                ],
                "svids": [
                    {
                        "proxy": proxy,
                        "identity": latest.identity,
                        "issuedAt": latest.issued_at,
                        "expiresAt": latest.expires_at,
                    }
                    for proxy, latest in sorted(c.svids.latest.items())
                ],
                "proxies": proxies,
            }
        )

    # --- identity ----------------------------------------------------------------------

    async def ca_status(self, request: web.Request) -> web.Response:
        return web.json_response(ca_document(self._c))

    async def reload_ca(self, request: web.Request) -> web.Response:
        """A root rotation's step: read the CA files again, sign with them, send the
        bundle to every proxy. A refusal leaves the CA as it was."""
        force = False
        if request.body_exists:  # read already, by the middleware: not `can_read_body`
            try:
                force = bool((await request.json()).get("force", False))
            except (ValueError, AttributeError):
                return error(400, "bad_request", 'the body must be JSON {"force": false}')
        try:
            self._c.reload_ca(force=force)
        except RootStillInUse as exc:
            return error(409, "root_in_use", str(exc), exc.holders)
        except ConfigError as exc:
            return error(422, "invalid_ca", str(exc))
        return web.json_response(ca_document(self._c))

    async def mint_join_token(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            namespace = str(body["namespace"])
            service_account = str(body["serviceAccount"])
            ttl = float(body.get("ttlSeconds", 600))
        except (ValueError, KeyError, TypeError):
            return error(
                400,
                "bad_request",
                "the body must be JSON "
                '{"namespace": ..., "serviceAccount": ..., "ttlSeconds": 600}',
            )
        try:
            issued = self._c.join_tokens.mint(namespace, service_account, ttl)
        except MeshError as exc:
            return error(422, "invalid", str(exc))
        log.info("join token minted for %s, expires in %.0f s", issued.identity, ttl)
        return web.json_response(
            {
                "token": issued.token,
                "identity": issued.identity.uri,
                "expiresAt": issued.expires_at,
            }
        )

    async def issue_svid(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        try:
            csr = str((await request.json())["csr"]).encode()
        except (ValueError, KeyError, TypeError):
            return error(400, "bad_request", 'the body must be JSON {"csr": "<PEM CSR>"}')
        answer = self._c.svids.issue(csr, token, request.remote or "?")
        if isinstance(answer, tuple):
            reason, message = answer
            return error(401 if reason.startswith("token_") else 400, reason, message)
        return web.json_response(
            {
                "identity": answer.identity.uri,
                "certificate": answer.certificate.decode(),
                "trustBundle": answer.trust_bundle.decode(),
                "expiresAt": answer.expires_at,
            }
        )


def _kind_of_segment(segment: str) -> str:
    for kind in KINDS:
        if kind.lower() == segment:
            return kind
    return segment
