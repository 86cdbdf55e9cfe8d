"""A small synchronous client for the controller's REST API, used by `myc`.

The CLI is synchronous; aiohttp is not. `ControllerClient` owns one event loop (an
`asyncio.Runner`) and one aiohttp session for its lifetime, typically one command, and
runs each request to completion on it. A watch is a plain generator that runs one
`readline` at a time on that same loop, so the stream and the session stay valid between
events. Ctrl-C during a request cancels it and surfaces as `KeyboardInterrupt`.

Invariants: every aiohttp or JSON failure is translated here into the `CliError` family
(`errors.py`); nothing above this module sees a foreign exception. Answers are parsed
into small frozen dataclasses; resources themselves stay plain JSON dicts, because the
CLI only renders them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote

import aiohttp

from mycelium.cli.errors import (
    CliError,
    ControllerError,
    ControllerTimeout,
    ControllerUnreachable,
    InvalidResources,
    Issue,
    ResourceNotFound,
    StreamEnded,
    TokenRefused,
)
from mycelium.cli.kinds import ResourceDoc
from mycelium.cli.manifests import ManifestFile

# A request that takes longer than this is stuck, not slow: an apply writes one
# transaction, and a list reads one range.
REQUEST_TIMEOUT_S = 30.0
# The controller is local or on the same network; a longer connect means it is not there.
CONNECT_TIMEOUT_S = 5.0
# One watch event is one JSON line holding a whole resource; aiohttp's default 64 KiB
# line limit would break on a large route table.
MAX_LINE_BYTES = 4 * 1024 * 1024

# Cluster-scoped kinds (Namespace) are addressed with this namespace segment.
CLUSTER_SCOPE = "_"


# --- what the API answers -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerVersion:
    version: str
    store: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    kind: str
    namespace: str | None
    name: str
    action: str  # "created" | "configured" | "unchanged"
    # for "configured": (field path, stored value, new value), each field that changes
    changes: tuple[tuple[str, Any, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    revision: int
    results: list[ApplyResult]


@dataclass(frozen=True, slots=True)
class ResourceList:
    revision: int  # the store revision the list was read at; watch from revision + 1
    items: list[ResourceDoc]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    revision: int
    kind: str
    namespace: str | None
    name: str
    resource: ResourceDoc | None  # None for a delete when the server does not send it


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    version: str
    store: str
    revision: int
    uptime_seconds: float
    discovery_address: str | None


@dataclass(frozen=True, slots=True)
class Nack:
    version: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    id: str
    namespace: str | None
    workload: str | None
    service: str | None
    role: str | None
    subscriptions: list[str]  # topics such as "service:reviews.default"
    connected_since: str | None
    version_sent: str | None
    version_acked: str | None
    state: str  # "synced" | "pending" | "nack"
    last_nack: Nack | None


@dataclass(frozen=True, slots=True)
class MeshStatus:
    controller: ControllerInfo
    proxies: list[ProxyStatus]
    workloads: int
    document: dict[str, Any]  # the answer as received, for `-o json` and `-o yaml`


# --- the client ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinToken:
    token: str
    identity: str
    expires_at: float


class ControllerClient:
    """Synchronous access to one controller; use as a context manager, one per command."""

    def __init__(self, base_url: str, token: str | None, *, token_source: str) -> None:
        """`token_source` says where the token came from, for the 401 message."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._token_source = token_source
        self._runner = asyncio.Runner()
        self._session: aiohttp.ClientSession | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._runner.run(self._session.close())
            self._session = None
        self._runner.close()

    # -- endpoints ---------------------------------------------------------------------

    def version(self) -> ServerVersion:
        body = self._call("GET", "/version", auth=False)
        return _parse("GET /version", body, lambda b: ServerVersion(b["version"], b["store"]))

    def apply(self, files: Sequence[ManifestFile], *, dry_run: bool) -> ApplyOutcome:
        payload = {
            "files": [{"name": f.name, "content": f.content} for f in files],
            "dryRun": dry_run,
        }
        body = self._call("POST", "/api/v1/apply", json_body=payload)

        def parse(b: Any) -> ApplyOutcome:
            results = [
                ApplyResult(
                    r["kind"],
                    r.get("namespace"),
                    r["name"],
                    r["action"],
                    tuple((c["path"], c["from"], c["to"]) for c in r.get("changes", [])),
                )
                for r in b["results"]
            ]
            return ApplyOutcome(int(b["revision"]), results)

        return _parse("POST /api/v1/apply", body, parse)

    def list_resources(self, kind: str | None, namespace: str | None) -> ResourceList:
        """Resources of `kind` (None: every kind) in `namespace` (None: every namespace)."""
        params = {k: v for k, v in (("kind", kind), ("namespace", namespace)) if v is not None}
        body = self._call("GET", "/api/v1/resources", params=params)
        return _parse(
            "GET /api/v1/resources",
            body,
            lambda b: ResourceList(int(b["revision"]), [dict(i) for i in b["items"]]),
        )

    def get_resource(self, kind: str, namespace: str | None, name: str) -> ResourceDoc:
        """One resource; raises `ResourceNotFound`. A None namespace is cluster scope."""
        body = self._call("GET", _resource_path(kind, namespace, name))
        return _parse("GET resource", body, dict)

    def delete_resource(self, kind: str, namespace: str | None, name: str) -> int:
        """Delete one resource and return the revision of the delete."""
        body = self._call("DELETE", _resource_path(kind, namespace, name))
        return _parse("DELETE resource", body, lambda b: int(b["revision"]))

    def create_join_token(
        self, namespace: str, service_account: str, ttl_seconds: float
    ) -> JoinToken:
        payload = {
            "namespace": namespace,
            "serviceAccount": service_account,
            "ttlSeconds": ttl_seconds,
        }
        body = self._call("POST", "/api/v1/join-tokens", json_body=payload)
        return _parse(
            "POST /api/v1/join-tokens",
            body,
            lambda b: JoinToken(str(b["token"]), str(b["identity"]), float(b["expiresAt"])),
        )

    def dashboard_login(self) -> str:
        """A one-time link that logs a browser into the dashboard (a full URL)."""
        body = self._call("POST", "/api/v1/dashboard-logins", json_body={})
        path = _parse("POST /api/v1/dashboard-logins", body, lambda b: str(b["path"]))
        return f"{self.base_url}{path}"

    def ca_status(self) -> dict[str, Any]:
        body = self._call("GET", "/api/v1/ca")
        return _parse("GET /api/v1/ca", body, _ca_document)

    def reload_ca(self, *, force: bool = False) -> dict[str, Any]:
        body = self._call("POST", "/api/v1/ca/reload", json_body={"force": force})
        return _parse("POST /api/v1/ca/reload", body, _ca_document)

    def check_facts(self) -> dict[str, Any]:
        """What `myc check` judges (see `mycelium.cli.checks`)."""
        body = self._call("GET", "/api/v1/check")

        def parse(b: Any) -> dict[str, Any]:
            float(b["time"]), float(b["caExpiresAt"])  # what every check needs
            return dict(b)

        return _parse("GET /api/v1/check", body, parse)

    def stat(self, by: str, window_seconds: float, namespace: str | None = None) -> dict[str, Any]:
        """Golden metrics per service, route or source workload (`myc stat`, `top`), in
        `namespace` (None: every namespace)."""
        params = {"by": by, "window": f"{window_seconds:g}"}
        if namespace is not None:
            params["namespace"] = namespace
        body = self._call("GET", "/api/v1/stat", params=params)

        def parse(b: Any) -> dict[str, Any]:
            for row in b["rows"]:
                str(row["name"]), float(row["rps"])  # what every table needs
            return dict(b)

        return _parse("GET /api/v1/stat", body, parse)

    def scrape_targets(self) -> list[dict[str, Any]]:
        """Every proxy's metrics endpoint, as Prometheus' service discovery finds it."""
        body = self._call("GET", "/prometheus/targets", auth=False)

        def parse(b: Any) -> list[dict[str, Any]]:
            for group in b:
                [str(t) for t in group["targets"]], dict(group["labels"])
            return list(b)

        return _parse("GET /prometheus/targets", body, parse)

    def scrape(self, url: str) -> str:
        """A metrics exposition's text (a proxy's, found by `scrape_targets`)."""
        return self._run(self._scrape(url))

    async def _scrape(self, url: str) -> str:
        session = self._ensure_session()
        try:
            async with session.get(url, headers={"Accept": "text/plain"}) as response:
                if response.status != 200:
                    raise CliError(f"{url} answered {response.status} {response.reason}")
                return await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CliError(f"{url} did not answer: {exc or type(exc).__name__}") from exc

    def status(self) -> MeshStatus:
        body = self._call("GET", "/api/v1/status")
        return _parse("GET /api/v1/status", body, _parse_status)

    def watch(
        self, kind: str | None, namespace: str | None, from_revision: int
    ) -> Iterator[WatchEvent]:
        """Changes from `from_revision` on, until the caller stops iterating.

        Raises `StreamEnded` if the controller closes the stream.
        """
        params = {"fromRevision": str(from_revision)}
        if kind is not None:
            params["kind"] = kind
        if namespace is not None:
            params["namespace"] = namespace
        for line in self._stream_lines("/api/v1/watch", params, "watch"):
            yield _parse_watch_line(line)

    def tap(self, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        """The lines of a live tap (`GET /api/v1/tap`), until its `end` line; the
        caller stops iterating to end it sooner. Raises `StreamEnded` if the
        controller closes the stream before the end."""
        for line in self._stream_lines("/api/v1/tap", params, "tap"):
            body = _decode_json("GET /api/v1/tap", line)
            if not isinstance(body, dict) or "type" not in body:
                raise ControllerError(200, "bad_answer", "a tap line without a type")
            yield body
            if body["type"] == "end":
                return

    def _stream_lines(self, path: str, params: Mapping[str, str], what: str) -> Iterator[bytes]:
        """The non-empty lines of a streaming answer; `StreamEnded` if it stops."""
        ended = StreamEnded(
            f"the controller at {self.base_url} closed the {what} stream: it may have "
            "stopped or restarted; run the command again"
        )
        response = self._run(self._open_stream(path, params))
        try:
            while True:
                try:
                    line = self._run(response.content.readline())
                except StreamEnded:
                    raise ended from None
                if not line:
                    raise ended
                if line.strip():  # else a keep-alive
                    yield line
        finally:
            response.close()

    # -- plumbing ----------------------------------------------------------------------

    def _run[T](self, awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        try:
            return self._runner.run(wrapped())
        except aiohttp.ConnectionTimeoutError as exc:
            raise ControllerUnreachable(
                self.base_url, f"no answer to connect within {CONNECT_TIMEOUT_S:g} s"
            ) from exc
        except TimeoutError as exc:
            raise ControllerTimeout(self.base_url, REQUEST_TIMEOUT_S) from exc
        except aiohttp.ClientConnectorError as exc:
            # Refused is the common case and needs no detail; a DNS or routing failure does.
            refused = isinstance(exc.os_error, ConnectionRefusedError)
            raise ControllerUnreachable(
                self.base_url, None if refused else (exc.strerror or str(exc.os_error))
            ) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise StreamEnded(
                f"the controller at {self.base_url} closed the connection mid-answer: check its log"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ControllerUnreachable(self.base_url, str(exc) or type(exc).__name__) from exc

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        auth: bool = True,
    ) -> Any:
        return self._run(self._request(method, path, params, json_body, auth))

    def _ensure_session(self) -> aiohttp.ClientSession:
        # Created inside the runner's loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                read_bufsize=MAX_LINE_BYTES,
                raise_for_status=False,
            )
        return self._session

    def _headers(self, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if auth and self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json_body: Any,
        auth: bool,
    ) -> Any:
        session = self._ensure_session()
        async with session.request(
            method,
            self.base_url + path,
            params=params,
            json=json_body,
            headers=self._headers(auth),
        ) as response:
            raw = await response.read()
            if response.status >= 400:
                raise self._error_from(method, path, response.status, response.reason, raw)
            return _decode_json(f"{method} {path}", raw)

    async def _open_stream(self, path: str, params: Mapping[str, str]) -> aiohttp.ClientResponse:
        session = self._ensure_session()
        # A watch lasts as long as the operator wants: only connecting is bounded.
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S, sock_read=None)
        response = await session.get(
            self.base_url + path, params=params, headers=self._headers(True), timeout=timeout
        )
        if response.status >= 400:
            raw = await response.read()
            response.release()
            raise self._error_from("GET", path, response.status, response.reason, raw)
        return response

    def _error_from(
        self, method: str, path: str, status: int, reason: str | None, raw: bytes
    ) -> Exception:
        document: Any
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        code = str(document.get("error") or "http_" + str(status))
        # The API's messages are sentences meant for the operator: print them as they are.
        message = str(
            document.get("message")
            or f"the controller answered {status} {reason} to {method} {path}: check its log"
        )
        if status == 401:
            if self._token is None:
                return TokenRefused(
                    f"the controller refused the admin token: none was found at "
                    f"{self._token_source}; point --home at the controller's home, "
                    "or set MYC_TOKEN"
                )
            return TokenRefused(
                f"the controller refused the admin token from {self._token_source}: {message}"
            )
        if status == 404:
            return ResourceNotFound(status, code, message)
        if status == 422 and isinstance(document.get("details"), list):
            issues = [_issue_from_json(d) for d in document["details"] if isinstance(d, dict)]
            if issues:
                return InvalidResources(issues, found_by="the controller")
        return ControllerError(status, code, message)


# --- parsing ------------------------------------------------------------------------


def _resource_path(kind: str, namespace: str | None, name: str) -> str:
    segments = (kind, namespace if namespace is not None else CLUSTER_SCOPE, name)
    return "/api/v1/resources/" + "/".join(quote(s, safe="") for s in segments)


def _decode_json(what: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ControllerError(
            200, "bad_answer", f"the controller's answer to {what} is not JSON: is the URL right?"
        ) from exc


def _parse[T](what: str, body: Any, build: Callable[[Any], T]) -> T:
    """Apply `build` to a decoded body; a missing or mistyped field is the server's bug."""
    try:
        return build(body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ControllerError(
            200,
            "bad_answer",
            f"the controller's answer to {what} lacks or mistypes {exc}: "
            "are myc and the controller the same version? (myc version)",
        ) from exc


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _namespace(value: Any) -> str | None:
    """A namespace as the API sends it; cluster scope ("_" or empty) is None."""
    if value is None or value in ("", CLUSTER_SCOPE):
        return None
    return str(value)


def _parse_status(body: Any) -> MeshStatus:
    c = body["controller"]
    controller = ControllerInfo(
        version=str(c["version"]),
        store=str(c["store"]),
        revision=int(c["revision"]),
        uptime_seconds=float(c["uptimeSeconds"]),
        discovery_address=_optional_str(c.get("discoveryAddress")),
    )
    proxies = []
    for p in body["proxies"]:
        nack = p.get("lastNack")
        proxies.append(
            ProxyStatus(
                id=str(p["id"]),
                namespace=_optional_str(p.get("namespace")),
                workload=_optional_str(p.get("workload")),
                service=_optional_str(p.get("service")),
                role=_optional_str(p.get("role")),
                subscriptions=[str(t) for t in p.get("subscriptions") or []],
                connected_since=_optional_str(p.get("connectedSince")),
                version_sent=_optional_str(p.get("versionSent")),
                version_acked=_optional_str(p.get("versionAcked")),
                state=str(p["state"]),
                last_nack=(
                    Nack(str(nack.get("version", "")), str(nack.get("reason", "")))
                    if isinstance(nack, dict)
                    else None
                ),
            )
        )
    return MeshStatus(controller, proxies, int(body.get("workloads", 0)), dict(body))


def _parse_watch_line(line: bytes) -> WatchEvent:
    body = _decode_json("GET /api/v1/watch", line)
    if isinstance(body, dict) and body.get("type") not in ("put", "delete") and "error" in body:
        # The stream may end with an error document (e.g. compacted history).
        raise ControllerError(200, str(body["error"]), str(body.get("message", body["error"])))

    def build(b: Any) -> WatchEvent:
        kind = b["type"]
        if kind not in ("put", "delete"):
            raise ValueError(f"event type {kind!r}")
        resource = b.get("resource")
        return WatchEvent(
            type=kind,
            revision=int(b["revision"]),
            kind=str(b["kind"]),
            namespace=_namespace(b.get("namespace")),
            name=str(b["name"]),
            resource=dict(resource) if isinstance(resource, dict) else None,
        )

    return _parse("GET /api/v1/watch", body, build)


def _issue_from_json(detail: Mapping[str, Any]) -> Issue:
    document, line = detail.get("document"), detail.get("line")
    return Issue(
        source=str(detail.get("source") or "<input>"),
        document=document if isinstance(document, int) and document > 0 else None,
        resource=_optional_str(detail.get("resource")) or None,
        path=_optional_str(detail.get("path")) or None,
        message=str(detail.get("message", "invalid")),
        line=line if isinstance(line, int) else None,
    )


def _ca_document(body: Any) -> dict[str, Any]:
    str(body["signer"]["subject"]), list(body["roots"])  # what `myc ca` shows
    return dict(body)
