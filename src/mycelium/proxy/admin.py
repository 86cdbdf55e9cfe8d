"""Admin (loopback only, 15000) and health (15021) endpoints.

Admin: `/config_dump` (the accepted snapshot and its version), `/clusters` (every live
cluster with its endpoints' health, load, latency estimate and ejection state), `/ready`,
`/stats` (counters). Health: `/healthz/ready`, 200 once a config is in force and the
proxy is not draining, else 503 — what a readiness probe polls. Metrics (15020):
`/stats/prometheus` and `/metrics`, the Prometheus text exposition (`proxy/exposition.py`).

Both are tiny HTTP/1.0 servers on asyncio streams: trusted local callers, GET only, one
request per connection. They deliberately share nothing with the data path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import msgspec

from mycelium.proxy import exposition
from mycelium.proxy.core import ProxyCore

# The admin API is local and small: a request line and a few headers.
MAX_ADMIN_REQUEST_BYTES = 8192


class AdminServer:
    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.ready = False

    async def serve_admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, self._admin_route)

    async def serve_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve(reader, writer, self._metrics_route)

    async def serve_health(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve(reader, writer, self._health_route)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Any
    ) -> None:
        try:
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_ADMIN_REQUEST_BYTES:
                raise ValueError("request too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            if method == "POST" and route == self._admin_route and path == "/leave":
                status, body = await self._leave()
            elif method == "POST" and route == self._admin_route and path == "/join":
                status, body = await self._join()
            elif method not in ("GET", "HEAD"):
                status, body = 405, {"error": "only GET is supported (and POST /join, /leave)"}
            else:
                status, body = route(path)
            if isinstance(body, str):  # an exposition
                payload, content_type = body.encode(), exposition.CONTENT_TYPE
            else:
                payload = json.dumps(body, indent=2, default=str).encode() + b"\n"
                content_type = "application/json"
            phrase = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Unavailable"}
            writer.write(
                f"HTTP/1.0 {status} {phrase.get(status, 'OK')}\r\n"
                f"content-type: {content_type}\r\ncontent-length: {len(payload)}\r\n"
                "connection: close\r\n\r\n".encode()
                + (payload if method != "HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- routes ---------------------------------------------------------------------------

    def _is_ready(self) -> bool:
        core = self.core
        return self.ready and bool(core.active.version) and not core.draining and not core.left

    async def _join(self) -> tuple[int, Any]:
        """Register the workload (a proxy started with `wait_for_join`): the runtime
        says so once the app behind it is ready."""
        core = self.core
        core.left = False
        if core.discovery is not None:
            await core.discovery.join_mesh()
        return 200, {"joined": True}

    async def _leave(self) -> tuple[int, Any]:
        """The first step of a graceful stop (the runtime's, before it stops the app):
        deregister the workload, so peers stop choosing it, and serve on meanwhile."""
        core = self.core
        core.left = True
        if core.discovery is not None:
            await core.discovery.leave_mesh()
        return 200, {"left": True, "ready": False}

    def _health_route(self, path: str) -> tuple[int, Any]:
        if path in ("/healthz/ready", "/ready"):
            ok = self._is_ready()
            return (200 if ok else 503), {
                "ready": ok,
                "draining": self.core.draining,
                "left": self.core.left,
            }
        return 404, {"error": f"no such path {path}; try /healthz/ready"}

    def _metrics_route(self, path: str) -> tuple[int, Any]:
        if path in ("/stats/prometheus", "/metrics"):
            return 200, exposition.render(self.core)
        return 404, {"error": f"no such path {path}; try /stats/prometheus or /metrics"}

    def _admin_route(self, path: str) -> tuple[int, Any]:
        core = self.core
        if path == "/ready":
            return self._health_route("/healthz/ready")
        if path == "/config_dump":
            client = core.discovery
            entries = client.snapshot if client is not None else {}
            return 200, {
                "version": core.active.version,
                "loaded_from_disk": bool(client and client.loaded_from_disk),
                "connected": bool(client and client.connected.is_set()),
                "last_nack": client.last_nack if client else None,
                "identity": _identity(core),
                "subscriptions": sorted(client.subscriptions) if client else [],
                "entries": {
                    name: msgspec.to_builtins(entry) for name, entry in sorted(entries.items())
                },
            }
        if path == "/clusters":
            return 200, {"clusters": self._clusters()}
        if path == "/stats":
            return 200, {
                "counters": dict(sorted(core.counter_values().items())),
                "downstream_connections": len(core.connections),
                "tasks": len(core.tasks),
            }
        return 404, {
            "error": f"no such path {path}; try /config_dump, /clusters, /stats "
            "(POST /join, /leave)"
        }

    def _clusters(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for cluster in self.core.clusters:
            ejected = {e.key: cluster.outlier.is_ejected(e, now) for e in cluster.endpoints}
            out.append(
                {
                    "name": cluster.name,
                    "port": cluster.port,
                    "balancer": cluster.settings.balancer,
                    "endpoints": [
                        {
                            "address": e.key,
                            "healthy": e.healthy,
                            "ejected": ejected.get(e.key, False),
                            "in_flight": e.in_flight,
                            "weight": e.weight,
                            "identity": e.identity,
                            "labels": e.labels,
                        }
                        for e in cluster.endpoints
                    ],
                }
            )
        return out


def _identity(core: ProxyCore) -> dict[str, Any] | None:
    """This proxy's SVID as the admin shows it: who and until when, never the key."""
    svid = core.svid
    if svid is None:
        return None
    return {"spiffeId": svid.identity.uri, "expiresAt": svid.expires_at.isoformat()}
