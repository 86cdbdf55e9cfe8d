"""The dashboard the controller serves on its REST port, at /dashboard/.

A static page (`static/`: plain JavaScript, with cytoscape.js for the graph and uPlot
for charts, vendored as published) and the read-only JSON it polls under
/dashboard/api/. It shows config and telemetry, never the admin token or keys, and
changes nothing. Its API answers a browser that logged in (a session cookie from a
one-time link `myc dashboard` prints: `logins.py`) or a client with the admin token;
anyone else gets a 401 that says how to log in. The page and its static files carry no
data and are served to anyone.

- `/dashboard/api/config`: every resource, its YAML and store revision, and which
  connected proxies depend on it and have acknowledged a config compiled at or after
  that revision.
- `/dashboard/api/graph?window=S`: the service graph of the last S seconds (default
  60): workloads and services as nodes; edges (workload → service → workload) with
  requests/s, success rate, p50/p95/p99 and the share of mTLS, from the proxies'
  telemetry reports (`control/traffic.py`).
- `/dashboard/api/services?window=S`: golden metrics per service, and
  `/dashboard/api/series?service=NAME&window=S` one point per slot for the charts.
- `/dashboard/api/tap?target=...`: live requests, as `myc tap` streams them
  (docs/tap.md): the tap view.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiohttp import web

from mycelium.api.documents import without_unset
from mycelium.control.dashboard.logins import COOKIE, SESSION_SECONDS, DashboardLogins
from mycelium.control.discovery_server import DiscoveryServer, ProxySession
from mycelium.control.state import MeshState
from mycelium.control.traffic import Totals, window_seconds
from mycelium.store import Store

STATIC = Path(__file__).parent / "static"
RESOURCE_PREFIX = "/mycelium/"


class DashboardSource(Protocol):
    """What the pages read from the controller: naming only this keeps the dashboard
    from importing the controller, which serves it."""

    @property
    def store(self) -> Store: ...

    @property
    def state(self) -> MeshState: ...

    @property
    def discovery(self) -> DiscoveryServer: ...


def dashboard_routes(
    controller: DashboardSource,
    logins: DashboardLogins,
    *,
    tap: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> list[web.AbstractRouteDef]:
    """`tap` is the REST API's tap (NDJSON), served here to a logged-in browser for the
    dashboard's live tap view. Who may call /dashboard/api/ is the REST app's
    middleware's to check (`admits`)."""
    pages = DashboardPages(controller)

    async def login(request: web.Request) -> web.StreamResponse:
        session = logins.redeem(request.query.get("code", ""), time.monotonic())
        if session is None:
            raise web.HTTPUnauthorized(
                text="this login link is spent, expired or unknown: run `myc dashboard` "
                "for a new one\n"
            )
        response = web.HTTPFound("/dashboard/")
        response.set_cookie(
            COOKIE,
            session,
            max_age=int(SESSION_SECONDS),
            path="/dashboard",
            httponly=True,
            samesite="Strict",
        )
        raise response

    return [
        web.get("/dashboard/api/tap", tap),
        web.get("/dashboard/login", login),
        web.get("/dashboard", pages.redirect),
        web.get("/dashboard/", pages.index),
        web.get("/dashboard/api/config", pages.config),
        web.get("/dashboard/api/graph", pages.graph),
        web.get("/dashboard/api/services", pages.services),
        web.get("/dashboard/api/series", pages.series),
        web.static("/dashboard/static", STATIC),
    ]


class DashboardPages:
    def __init__(self, controller: DashboardSource) -> None:
        self._c = controller

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard/")

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def config(self, request: web.Request) -> web.Response:
        c = self._c
        listing = await c.store.range(RESOURCE_PREFIX)
        resources: list[dict[str, Any]] = []
        for kv in listing.kvs:
            parts = kv.key.split("/")  # "", "mycelium", kind, namespace, name
            resource = c.state.by_key(kv.key)
            proxies = c.discovery.sessions_affected_by(resource) if resource is not None else []
            resources.append(
                {
                    "kind": resource.kind if resource is not None else parts[2],
                    "namespace": "" if parts[3] == "_" else parts[3],
                    "name": parts[4],
                    "revision": kv.mod_revision,
                    "yaml": _yaml(kv.value),
                    "proxies": [_acknowledgement(s, kv.mod_revision) for s in proxies],
                }
            )
        resources.sort(key=lambda r: (r["kind"], r["namespace"], r["name"]))
        return web.json_response({"revision": listing.revision, "resources": resources})

    async def graph(self, request: web.Request) -> web.Response:
        seconds = _window(request, 60.0)
        edges = self._c.discovery.traffic.edges(time.time(), seconds)
        nodes: dict[str, dict[str, str]] = {}
        links: dict[tuple[str, str], Totals] = defaultdict(Totals)
        for key, totals in edges.items():
            source, source_ns, service, workload, workload_ns, _, _, _ = key
            caller = _node(nodes, "workload", source_ns, source)
            target = _node(nodes, "service", service.rpartition(".")[2], service.split(".")[0])
            callee = _node(nodes, "workload", workload_ns, workload)
            links[(caller, target)].merge(totals)
            links[(target, callee)].merge(totals)
        return web.json_response(
            {
                "window": seconds,
                "nodes": sorted(nodes.values(), key=lambda n: n["id"]),
                "edges": [
                    {"id": f"{a}->{b}", "source": a, "target": b, **totals.summary(seconds)}
                    for (a, b), totals in sorted(links.items())
                ],
            }
        )

    async def services(self, request: web.Request) -> web.Response:
        seconds = _window(request, 60.0)
        grouped = self._c.discovery.traffic.grouped(time.time(), seconds, "service")
        return web.json_response(
            {
                "window": seconds,
                "services": [
                    {"service": name, **totals.summary(seconds)}
                    for name, totals in sorted(grouped.items())
                ],
            }
        )

    async def series(self, request: web.Request) -> web.Response:
        service = request.query.get("service", "")
        seconds = _window(request, 300.0)
        points = self._c.discovery.traffic.series(time.time(), seconds, service)
        return web.json_response({"service": service, "points": points})


def _window(request: web.Request, default: float) -> float:
    try:
        return window_seconds(request.query.get("window", str(default)))
    except ValueError:
        raise web.HTTPBadRequest(text="window must be a number of seconds") from None


def _node(nodes: dict[str, dict[str, str]], kind: str, namespace: str, name: str) -> str:
    node_id = f"{kind}:{namespace}/{name}"
    nodes.setdefault(node_id, {"id": node_id, "kind": kind, "namespace": namespace, "name": name})
    return node_id


def _acknowledgement(session: ProxySession, revision: int) -> dict[str, Any]:
    return {
        "id": session.node.id,
        "acked": session.acked_revision >= revision,
        "state": session.state,
    }


def _yaml(value: bytes) -> str:
    """The stored resource as YAML, without the unset fields every default fills in."""
    document = without_unset(json.loads(value))
    return str(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
