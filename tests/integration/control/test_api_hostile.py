"""Hostile clients on the REST port: slow heads, idle floods from one address and from
many, oversized heads and bodies, slow bodies. Each is refused with bounded cost and
counted, while well-behaved clients (and a long watch) are served, and a proxy of the
mesh still gets a pushed change within a second once each story is over.

Every flood here is on loopback, bounded in count, and bounded in time by its
deadlines; the flooding sockets bind to their own 127.x source addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from tests.support.controller import running_controller as controller_alone
from tests.support.controller import running_mesh
from tests.support.discovery_peer import watched_proxy
from tests.support.polling import eventually

from mycelium.control.api_limits import MAX_HEADERS, MAX_REQUEST_LINE_BYTES
from mycelium.control.config import ApiLimits
from mycelium.control.controller import Controller
from mycelium.control.rest_api import MAX_BODY_BYTES

SERVICE = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""

type Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def running_controller(home: Path, **overrides: Any) -> AsyncIterator[Controller]:
    """A controller with a watched proxy, which must get a pushed change within a
    second after the block (the REST port's troubles must not reach the mesh)."""
    async with running_mesh(home, fresh_connections=True, **overrides) as mesh:
        watched = await watched_proxy(mesh)
        yield mesh.controller
        latency = await watched.push_latency()
        assert latency < 1.0, f"the watched proxy waited {latency:.3f} s for a push"


@contextlib.asynccontextmanager
async def connections(
    controller: Controller, count: int, *, sources: list[str] | None = None
) -> AsyncIterator[list[Connection]]:
    """`count` raw connections to the REST port, from `sources` in turn (default
    127.0.0.1), closed at the end of the block."""
    sources = sources or ["127.0.0.1"]
    opened: list[Connection] = []
    try:
        for i in range(count):
            opened.append(
                await asyncio.open_connection(
                    "127.0.0.1", controller.api_port, local_addr=(sources[i % len(sources)], 0)
                )
            )
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the controller closes the connection within `seconds` (anything it
    sends first is read and dropped)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass  # reset: closed too
    return True


async def response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines if line)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}


def raw_head(method: str, path: str, *fields: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *fields, "", ""]).encode()


async def status_of(controller: Controller, path: str = "/api/v1/status") -> int:
    """A well-behaved client's request, on a fresh connection from 127.0.0.1."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"http://127.0.0.1:{controller.api_port}{path}",
            headers={"Authorization": f"Bearer {controller.admin_token}"},
        ) as response,
    ):
        return response.status


async def metrics_text(controller: Controller) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{controller.api_port}/metrics") as response,
    ):
        return await response.text()


# --- slow and silent heads ------------------------------------------------------------


async def test_a_slowloris_head_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    async with (
        running_controller(
            tmp_path / "home", api_limits=ApiLimits(request_head_seconds=1.0)
        ) as controller,
        connections(controller, 1) as [(reader, writer)],
    ):
        loop = asyncio.get_running_loop()
        opened = loop.time()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        cut = False
        for _ in range(20):  # a header byte every 0.5 s, for 10 s at most
            try:
                writer.write(b"a")
                await writer.drain()
            except ConnectionError:
                cut = True
                break
            if await closed_within(reader, 0.5):
                cut = True
                break
        assert cut, "the slowloris connection lived past 10 s"
        assert 0.9 <= loop.time() - opened < 3.0
        assert controller.api_refusals.counts == {"head_timeout": 1}


async def test_connections_that_send_nothing_are_closed_and_counted(tmp_path: Path) -> None:
    async with (
        running_controller(
            tmp_path / "home", api_limits=ApiLimits(request_head_seconds=1.0)
        ) as controller,
        connections(controller, 3) as silent,
    ):
        loop = asyncio.get_running_loop()
        opened = loop.time()
        closed = await asyncio.gather(*(closed_within(reader, 5.0) for reader, _ in silent))
        assert closed == [True, True, True]
        assert loop.time() - opened >= 0.9
        assert controller.api_refusals.counts == {"head_timeout": 3}
        assert 'mycelium_controller_api_refusals_total{reason="head_timeout"} 3.0' in (
            await metrics_text(controller)
        )


async def test_a_watch_streams_on_past_the_head_deadline(tmp_path: Path) -> None:
    async with (
        running_controller(
            tmp_path / "home", api_limits=ApiLimits(request_head_seconds=0.5)
        ) as controller,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://127.0.0.1:{controller.api_port}"
        auth = {"Authorization": f"Bearer {controller.admin_token}"}
        async with session.get(f"{base}/api/v1/watch?kind=Service", headers=auth) as watch:
            assert watch.status == 200
            # A silent connection opened after the watch is cut: the watch is now
            # older than the head deadline.
            async with connections(controller, 1) as [(reader, _)]:
                assert await closed_within(reader, 5.0)
            assert controller.api_refusals.counts == {"head_timeout": 1}
            async with session.post(
                f"{base}/api/v1/apply",
                headers=auth,
                json={"files": [{"name": "svc.yaml", "content": SERVICE}]},
            ) as applied:
                assert applied.status == 200
            line = await asyncio.wait_for(watch.content.readline(), 5)
            assert b'"name": "ratings"' in line
        assert controller.api_refusals.counts == {"head_timeout": 1}  # the watch was not cut


# --- floods of idle connections -----------------------------------------------------


async def test_one_address_flooding_is_capped_and_others_are_served(tmp_path: Path) -> None:
    async with (
        running_controller(
            tmp_path / "home",
            # the flood stays while we look
            api_limits=ApiLimits(
                request_head_seconds=30.0, connections=64, connections_per_address=4
            ),
        ) as controller,
        connections(controller, 10, sources=["127.0.0.2"]) as flood,
    ):
        await eventually(
            lambda: controller.api_refusals.counts["too_many_from_address"] == 6,
            timeout=5,
            what="six of ten connections from 127.0.0.2 refused",
        )
        closed = await asyncio.gather(*(closed_within(reader, 1.0) for reader, _ in flood))
        assert closed.count(True) == 6  # the four let in are still waiting
        async with asyncio.timeout(2):
            assert await status_of(controller) == 200
        assert controller.api_refusals.counts == {"too_many_from_address": 6}


async def test_a_flood_from_many_addresses_hits_the_total_and_then_goes(
    tmp_path: Path,
) -> None:
    async with running_controller(
        tmp_path / "home",
        api_limits=ApiLimits(request_head_seconds=30.0, connections=8, connections_per_address=2),
    ) as controller:
        sources = [f"127.0.1.{i}" for i in range(1, 7)]
        async with connections(controller, 12, sources=sources):
            await eventually(
                lambda: controller.api_refusals.counts["too_many_connections"] == 4,
                timeout=5,
                what="four of twelve connections refused at the total",
            )
            # While the flood holds every place, a good client is refused too.
            async with connections(controller, 1) as [(reader, _)]:
                assert await closed_within(reader, 2.0)
            assert controller.api_refusals.counts == {"too_many_connections": 5}

        async def served() -> bool:
            try:
                return await status_of(controller) == 200
            except aiohttp.ClientError:
                return False  # the flood's places not all given back yet

        await eventually(served, timeout=5, what="a good client served once the flood went")
        assert set(controller.api_refusals.counts) == {"too_many_connections"}


# --- oversized and slow requests ------------------------------------------------------


async def test_an_unauthenticated_post_is_refused_before_its_body(tmp_path: Path) -> None:
    async with (
        running_controller(tmp_path / "home") as controller,
        connections(controller, 1) as [(reader, writer)],
    ):
        # Six MiB announced, none sent: the 401 must not wait for them.
        writer.write(
            raw_head(
                "POST",
                "/api/v1/apply",
                "Authorization: Bearer not-the-token",
                "Content-Type: application/json",
                f"Content-Length: {6 * 1024 * 1024}",
            )
        )
        status, fields = await response_head(reader)
        assert status == 401
        assert fields["connection"] == "close"  # the body is not waited for either
        assert controller.api_refusals.counts == {}  # refused for the token, not the body


async def test_a_body_announced_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    async with (
        running_controller(tmp_path / "home") as controller,
        connections(controller, 1) as [(reader, writer)],
    ):
        writer.write(
            raw_head(
                "POST",
                "/api/v1/apply",
                f"Authorization: Bearer {controller.admin_token}",
                f"Content-Length: {MAX_BODY_BYTES + 1}",
            )
        )
        status, fields = await response_head(reader)
        assert status == 413
        assert fields["connection"] == "close"
        assert controller.api_refusals.counts == {"body_too_large": 1}


async def test_a_chunked_body_over_the_limit_is_refused(tmp_path: Path) -> None:
    async with (
        running_controller(tmp_path / "home") as controller,
        aiohttp.ClientSession() as session,
    ):

        async def nine_mib() -> AsyncIterator[bytes]:
            for _ in range(9 * 16):  # 9 MiB in 64 KiB chunks, no length announced
                yield b" " * 65536

        async with session.post(
            f"http://127.0.0.1:{controller.api_port}/api/v1/apply",
            headers={"Authorization": f"Bearer {controller.admin_token}"},
            data=nine_mib(),
        ) as response:
            assert response.status == 413
            assert (await response.json())["error"] == "body_too_large"
        assert controller.api_refusals.counts == {"body_too_large": 1}


async def test_oversized_heads_get_400_and_are_counted(tmp_path: Path) -> None:
    long_line = raw_head("GET", "/healthz?q=" + "a" * MAX_REQUEST_LINE_BYTES)
    long_field = raw_head("GET", "/healthz", "X-Big: " + "a" * (9 * 1024))
    many_fields = raw_head("GET", "/healthz", *(f"X-{i}: 1" for i in range(MAX_HEADERS + 1)))
    async with running_controller(tmp_path / "home") as controller:
        for head in (long_line, long_field, many_fields):
            async with connections(controller, 1) as [(reader, writer)]:
                writer.write(head)
                status, _ = await response_head(reader)
                assert status == 400
                assert await closed_within(reader, 5.0)
        assert controller.api_refusals.counts == {"bad_head": 3}
        async with asyncio.timeout(2):
            assert await status_of(controller, "/healthz") == 200  # a normal head still passes


async def test_a_body_trickled_too_slowly_is_refused(tmp_path: Path) -> None:
    async with (
        running_controller(tmp_path / "home", api_limits=ApiLimits(body_seconds=1.0)) as controller,
        connections(controller, 1) as [(reader, writer)],
    ):
        loop = asyncio.get_running_loop()
        writer.write(
            raw_head(
                "POST",
                "/api/v1/apply",
                f"Authorization: Bearer {controller.admin_token}",
                "Content-Type: application/json",
                "Content-Length: 100",
            )
        )
        started = loop.time()
        answer = asyncio.create_task(response_head(reader))
        for _ in range(30):  # a byte every 0.3 s, 9 s at most
            done, _ = await asyncio.wait({answer}, timeout=0.3)
            if done:
                break
            writer.write(b" ")
        status, fields = await answer
        assert status == 408
        assert fields["connection"] == "close"
        assert 0.9 <= loop.time() - started < 3.0
        assert controller.api_refusals.counts == {"body_timeout": 1}


# --- shutting down --------------------------------------------------------------------


async def test_stopping_the_controller_closes_guarded_connections(tmp_path: Path) -> None:
    async with (
        controller_alone(
            tmp_path / "home", api_limits=ApiLimits(request_head_seconds=30.0)
        ) as controller,
        connections(controller, 2) as idle,
    ):
        assert controller.api_port != 0  # the real port, 0 having been asked for
        await controller.stop()
        closed = await asyncio.gather(*(closed_within(reader, 5.0) for reader, _ in idle))
        assert closed == [True, True]
        assert controller.api_refusals.counts == {}
