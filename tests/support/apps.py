"""A small real HTTP application for proxy tests (aiohttp's server, on loopback).

Every response says which instance answered (`x-served-by` and the JSON body), echoes
what arrived (method, path, headers, body size), and obeys a few query parameters so a
test can script failures:

- `status=503`           answer with that status
- `delay=0.5`            wait that long before answering
- `fail_first=2&key=k`   fail (503) the first 2 requests carrying key k, then succeed
- `size=100000`          send a body of that many bytes

`/ws` is a WebSocket echo: every text or binary message comes back as it was; the text
`close-please` makes the server close (code 4000); `/ws?decline=1` answers the upgrade
with a plain 400. `ws_closed` counts sockets the client closed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class EchoApp:
    name: str
    host: str
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    ws_closed: int = 0
    _failures: Counter[str] = field(default_factory=Counter)
    _runner: web.AppRunner | None = None

    async def start(self) -> EchoApp:
        app = web.Application()
        app.router.add_get("/ws", self._websocket)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if "decline" in request.query:
            return web.Response(status=400, text="no upgrade here\n")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                if message.data == "close-please":
                    await ws.close(code=4000, message=b"asked to")
                    return ws
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        self.ws_closed += 1  # the client closed it
        return ws

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        record = {
            "served_by": self.name,
            "method": request.method,
            "path": request.path_qs,
            "version": f"{request.version.major}.{request.version.minor}",
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_bytes": len(body),
        }
        self.seen.append(record)
        query = request.query
        if "delay" in query:
            await asyncio.sleep(float(query["delay"]))
        status = int(query.get("status", "200"))
        if "fail_first" in query:
            key = query.get("key", "")
            if self._failures[key] < int(query["fail_first"]):
                self._failures[key] += 1
                status = 503
        headers = {"x-served-by": self.name}
        if "size" in query:
            return web.Response(body=b"x" * int(query["size"]), status=status, headers=headers)
        return web.json_response(record, status=status, headers=headers)
