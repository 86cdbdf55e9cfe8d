"""Controller flood benchmark: what a flood of unauthenticated discovery connections costs
the controller in memory, and what it does to a well-behaved proxy's pushes meanwhile.

A real `myc controller` process (embedded SQLite, this checkout's code) serves one
Service with a DestinationPolicy and an HTTPRoute. One discovery client, connected from
127.0.0.1 before the flood, subscribes to that Service. Then N flood connections open at
once, each from its own loopback address (127.0.1.1 .. 127.0.8.254): each completes the
TLS handshake without any credential, announces a frame of `MAX_FRAME_BYTES` and streams
its payload until the controller closes the connection or the flood's deadline passes.
Every second of the flood the route's weights change through the REST API, and the
clock runs from sending the apply until the good client holds a snapshot with the new
weights.

Reported per run: the controller's RSS at rest, at its peak during the flood (sampled
every 100 ms) and after; how the controller ended the flood connections and how fast;
the bytes the flood got through; the push latencies (p50, max, within 1 s); the
controller's refusal counters from /metrics. This is a benchmark, not a test: run it by
hand, e.g.

    .venv/bin/python bench/controller_flood.py --connections 40 400 2000
    .venv/bin/python bench/controller_flood.py --smoke        # CI: 20 connections, 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The controller is a child process started through the venv's `myc`: put this
# checkout's sources first on its path too, or it measures whichever tree is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)

from tests.support.controller_process import ControllerProcess  # noqa: E402

from mycelium.discovery import protocol as p  # noqa: E402
from mycelium.discovery.client import (  # noqa: E402
    ControllerAddress,
    DiscoveryClient,
    Snapshot,
    validate_snapshot,
)
from mycelium.discovery.errors import ProtocolViolation  # noqa: E402

NAMESPACE = "bench"
SERVICE = "target"
ROUTE_ENTRY = f"route/{SERVICE}.{NAMESPACE}"

# Flood sources: 8 x 254 loopback addresses, one per connection (wrapping past 2,032),
# so a cap per client address does not hide a missing cap on the total.
SOURCE_SUBNETS = range(1, 9)
SOURCE_HOSTS = range(1, 255)
# One shared chunk of payload: the flood's own memory must not grow with the frame it
# announces. 64 KiB is also the write-buffer high-water mark of each flood connection.
CHUNK = bytes(64 * 1024)
HEADER = p.MAX_FRAME_BYTES.to_bytes(4, "big")

RSS_SAMPLE_SECONDS = 0.1
# Past this the flood stops early: at ~17 MB per connection the old server would take the
# machine (24 GiB, shared) down long before 2,000 connections.
RSS_CAP_MB = 6144
# How long after its apply a change may take before it counts as lost.
CHANGE_TIMEOUT_SECONDS = 10.0
# The good proxy's arrival and reconnects are bounded by this while it first syncs.
SYNC_TIMEOUT_SECONDS = 30.0


def source_address(index: int) -> str:
    subnet, host = divmod(index % (len(SOURCE_SUBNETS) * len(SOURCE_HOSTS)), len(SOURCE_HOSTS))
    return f"127.0.{SOURCE_SUBNETS[subnet]}.{SOURCE_HOSTS[host]}"


def service_yaml() -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec: {{selector: {{app: {SERVICE}}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec:
  host: {SERVICE}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
{route_yaml(50, 50)}"""


def route_yaml(w1: int, w2: int) -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: {SERVICE}, namespace: {NAMESPACE}}}
spec:
  parentRefs: [{{name: {SERVICE}}}]
  rules:
  - backendRefs:
    - {{name: {SERVICE}, subset: v1, weight: {w1}}}
    - {{name: {SERVICE}, subset: v2, weight: {w2}}}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


# --- the controller's memory ---------------------------------------------------------------


class RssSampler(threading.Thread):
    """Samples the controller's RSS (and ours) every 100 ms from a thread, so that a busy
    event loop in the bench does not stretch the interval; calls `on_cap` once when the
    controller passes the cap."""

    def __init__(self, pid: int, cap_bytes: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._controller = psutil.Process(pid)
        self._self = psutil.Process()
        self._cap = cap_bytes
        self._halt = threading.Event()
        self.on_cap: Callable[[], None] | None = None
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, controller, bench)

    def run(self) -> None:
        while not self._halt.wait(RSS_SAMPLE_SECONDS):
            try:
                rss = self._controller.memory_info().rss
            except psutil.Error:
                return  # the controller is gone; the run reports that
            self.samples.append((time.monotonic(), rss, self._self.memory_info().rss))
            if rss > self._cap and self.on_cap is not None:
                on_cap, self.on_cap = self.on_cap, None
                on_cap()

    def stop(self) -> None:
        self._halt.set()
        self.join(2)

    def controller_mb(self, start: float, end: float) -> list[float]:
        return [rss / 2**20 for t, rss, _ in self.samples if start <= t <= end]

    def timeline_mb(self, start: float, end: float) -> list[int]:
        """The controller's largest RSS in each second from `start` to `end`."""
        seconds: dict[int, int] = {}
        for t, rss, _ in self.samples:
            if start <= t <= end:
                second = int(t - start)
                seconds[second] = max(seconds.get(second, 0), rss)
        return [round(seconds[k] / 2**20) for k in sorted(seconds)]

    def bench_peak_mb(self) -> float:
        return max((own for _, _, own in self.samples), default=0) / 2**20


# --- the flood -------------------------------------------------------------------------------


@dataclass
class FloodConnection:
    source: str
    # "closed" (EOF) or "reset" by the server, "handshake_failed", or still open when
    # the flood ended ("open_at_deadline", "open_at_rss_cap")
    outcome: str = "not_started"
    error: str = ""
    handshake_s: float | None = None
    closed_after_s: float | None = None  # from the frame header sent to the server's close
    bytes_sent: int = 0
    refusal: str | None = None  # the Refusal frame the server sent first, if any
    attempts: int = 0  # connections made from this slot (more than 1 with --reconnect)


async def _send_frame(writer: asyncio.StreamWriter, conn: FloodConnection) -> None:
    """The header of a maximal frame, then its payload chunk by chunk, each written only
    when the previous one has drained."""
    writer.write(HEADER)
    remaining = p.MAX_FRAME_BYTES
    view = memoryview(CHUNK)
    while remaining > 0:
        piece = view[: min(remaining, len(CHUNK))]
        writer.write(piece)
        await writer.drain()
        conn.bytes_sent += len(piece)
        remaining -= len(piece)


async def _watch_close(reader: asyncio.StreamReader, conn: FloodConnection, sent: float) -> None:
    decoder = p.FrameDecoder(max_frame=len(CHUNK))
    try:
        while data := await reader.read(4096):
            for frame in decoder.feed(data):
                with contextlib.suppress(ProtocolViolation):
                    message = p.parse_server_message(frame)
                    if isinstance(message, p.Refusal) and conn.refusal is None:
                        conn.refusal = f"{message.code}: {message.message}"
        conn.outcome = "closed"
    except (OSError, ssl.SSLError, ProtocolViolation) as exc:
        conn.outcome, conn.error = "reset", type(exc).__name__
    conn.closed_after_s = time.monotonic() - sent


async def _flood_slot(
    conn: FloodConnection,
    port: int,
    tls: ssl.SSLContext,
    over: asyncio.Future[str],
    reconnect: bool,
) -> None:
    """One flood connection; with `reconnect`, a new one each time the controller
    closes the last, until the flood is over (sustained pressure, as an attacker would
    keep it, rather than one volley)."""
    while True:
        conn.attempts += 1
        await _flood_one(conn, port, tls, over)
        if not reconnect or over.done():
            return
        await asyncio.sleep(0)  # let the others' callbacks run between attempts


async def _flood_one(
    conn: FloodConnection, port: int, tls: ssl.SSLContext, over: asyncio.Future[str]
) -> None:
    started = time.monotonic()
    connecting = asyncio.ensure_future(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="127.0.0.1", local_addr=(conn.source, 0)
        )
    )
    await asyncio.wait({connecting, over}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        conn.outcome = f"not_connected_at_{over.result()}"
        return
    try:
        reader, writer = connecting.result()
    except (OSError, ssl.SSLError) as exc:
        conn.outcome, conn.error = "handshake_failed", type(exc).__name__
        return
    conn.handshake_s = time.monotonic() - started
    writer.transport.set_write_buffer_limits(high=len(CHUNK))
    sent = time.monotonic()
    sending = asyncio.ensure_future(_send_frame(writer, conn))
    watching = asyncio.ensure_future(_watch_close(reader, conn, sent))
    await asyncio.wait({watching, over}, return_when=asyncio.FIRST_COMPLETED)
    if not watching.done():
        conn.outcome = f"open_at_{over.result()}"
    for task in (sending, watching):
        task.cancel()
    await asyncio.gather(sending, watching, return_exceptions=True)
    writer.transport.abort()  # no close_notify exchange: the flood just lets go


async def flood(
    port: int,
    tls: ssl.SSLContext,
    count: int,
    seconds: float,
    sampler: RssSampler,
    *,
    reconnect: bool = False,
) -> tuple[list[FloodConnection], str, float]:
    """Open `count` connections at once; return them, why the flood ended ("deadline",
    "rss_cap" or "all_closed") and how long it lasted."""
    loop = asyncio.get_running_loop()
    over: asyncio.Future[str] = loop.create_future()

    def end(reason: str) -> None:
        if not over.done():
            over.set_result(reason)

    timer = loop.call_later(seconds, end, "deadline")
    sampler.on_cap = lambda: loop.call_soon_threadsafe(end, "rss_cap")
    started = time.monotonic()
    connections = [FloodConnection(source_address(i)) for i in range(count)]
    try:
        await asyncio.gather(*(_flood_slot(c, port, tls, over, reconnect) for c in connections))
    finally:
        timer.cancel()
        sampler.on_cap = None
    end("all_closed")
    return connections, over.result(), time.monotonic() - started


def flood_summary(connections: list[FloodConnection], ended_by: str, took: float) -> dict[str, Any]:
    closed = [c.closed_after_s for c in connections if c.closed_after_s is not None]
    handshakes = [c.handshake_s for c in connections if c.handshake_s is not None]
    return {
        "ended_by": ended_by,
        "seconds": round(took, 1),
        "connected": len(handshakes),
        "outcomes": dict(Counter(c.outcome for c in connections)),
        "errors": dict(Counter(c.error for c in connections if c.error)),
        "refusal_messages": dict(Counter(c.refusal for c in connections if c.refusal)),
        "closed_by_server": len(closed),
        "close_after_header_median_s": rounded(statistics.median(closed), 2) if closed else None,
        "close_after_header_max_s": rounded(max(closed), 2) if closed else None,
        "handshake_median_s": rounded(statistics.median(handshakes), 2) if handshakes else None,
        "handshake_max_s": rounded(max(handshakes), 2) if handshakes else None,
        "attempts": sum(c.attempts for c in connections),
        "bytes_sent": sum(c.bytes_sent for c in connections),
        "full_frames_sent": sum(c.bytes_sent == p.MAX_FRAME_BYTES for c in connections),
    }


# --- the well-behaved proxy --------------------------------------------------------------------


@dataclass
class Changes:
    """Route changes and when the good proxy first held each. A change whose snapshot
    was overtaken by a later one (the controller coalesces pushes) counts as arrived
    when the later one did: from then on the proxy holds config at least that new. A
    change whose apply failed is never overtaken: it is lost."""

    sent: list[float] = field(default_factory=list)
    applied: list[float | None] = field(default_factory=list)  # the REST call's own time
    arrived: list[float | None] = field(default_factory=list)
    superseded: int = 0
    reconnects: int = 0
    all_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def stream_lost(self) -> None:
        self.reconnects += 1

    @staticmethod
    def weights(index: int) -> tuple[int, int]:
        return index + 1, 100  # unique per change, never the initial 50/50

    def on_update(self, snapshot: Snapshot, version: str) -> None:
        validate_snapshot(snapshot, version)  # what a proxy does before accepting
        route = snapshot.get(ROUTE_ENTRY)
        if route is None:
            return
        backends = route.body["http_rules"][0]["backends"]
        weights = tuple(b["weight"] for b in backends)
        now = time.monotonic()
        for index in range(len(self.sent)):
            if self.weights(index) == weights and self.arrived[index] is None:
                self.arrived[index] = now
                for earlier in range(index):
                    if self.arrived[earlier] is None and self.applied[earlier] is not None:
                        self.arrived[earlier] = now
                        self.superseded += 1
        if self.sent and all(a is not None for a in self.arrived):
            self.all_arrived.set()

    def summary(self, flood_end: float) -> dict[str, Any]:
        """Latencies of the changes sent while the flood was on, and of those sent after
        it ended (the same controller, quiet again: the baseline)."""
        applies = [a for a in self.applied if a is not None]
        return {
            "during_flood": self._latencies(lambda sent: sent < flood_end),
            "after_flood": self._latencies(lambda sent: sent >= flood_end),
            "superseded": self.superseded,
            "apply_call_p50_ms": rounded(statistics.median(applies) * 1000) if applies else None,
            "apply_call_max_ms": rounded(max(applies) * 1000) if applies else None,
            "apply_failures": self.applied.count(None),
            "good_proxy_reconnects": self.reconnects,
        }

    def _latencies(self, chosen: Callable[[float], bool]) -> dict[str, Any]:
        pairs = [(s, a) for s, a in zip(self.sent, self.arrived, strict=True) if chosen(s)]
        latencies = [a - s for s, a in pairs if a is not None]
        return {
            "changes": len(pairs),
            "arrived": len(latencies),
            "within_1s": sum(x <= 1.0 for x in latencies),
            "p50_ms": rounded(statistics.median(latencies) * 1000) if latencies else None,
            "max_ms": rounded(max(latencies) * 1000) if latencies else None,
        }


async def apply(session: aiohttp.ClientSession, ctl: ControllerProcess, text: str) -> None:
    body = {"files": [{"name": "bench.yaml", "content": text}]}
    headers = {"Authorization": f"Bearer {ctl.token}"}
    async with session.post(ctl.base + "/api/v1/apply", json=body, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"apply failed: {r.status} {await r.text()}")


async def change_route(
    session: aiohttp.ClientSession, ctl: ControllerProcess, changes: Changes, index: int
) -> None:
    started = time.monotonic()
    changes.sent.append(started)
    changes.applied.append(None)
    changes.arrived.append(None)
    changes.all_arrived.clear()
    try:
        async with asyncio.timeout(CHANGE_TIMEOUT_SECONDS):
            await apply(session, ctl, route_yaml(*Changes.weights(index)))
        changes.applied[index] = time.monotonic() - started
    except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
        print(f"  change {index}: {type(exc).__name__}: {exc}")


async def changes_during(
    session: aiohttp.ClientSession,
    ctl: ControllerProcess,
    changes: Changes,
    count: int,
    seconds: float,
) -> None:
    """Up to `count` changes, one a second from half a second in, for `seconds`. One at a
    time: two applies in flight at once conflict in the store (503, "the resources kept
    changing"), so when an apply takes longer than a second the next goes at the next
    whole tick after it, and its clock starts when it is sent."""
    end = time.monotonic() + seconds
    tick = end - seconds + 0.5
    for index in range(count):
        if index > 0 and tick >= end:
            return
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
        await change_route(session, ctl, changes, index)
        while tick <= time.monotonic():  # ticks missed during a slow apply are skipped
            tick += 1.0


# --- one run ---------------------------------------------------------------------------------


def raise_fd_limit(connections: int) -> int:
    """Raise our soft limit (the controller inherits it) to fit every flood connection on
    both ends; a real controller runs with a limit far above its proxy count."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * connections + 1024
    if soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def controller_code() -> str:
    """The mycelium the controller will import (same interpreter, same environment)."""
    myc = Path(sys.executable).parent / "myc"
    python = myc.read_text().splitlines()[0].removeprefix("#!")
    out = subprocess.run(
        [python, "-c", "import mycelium; print(mycelium.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(out.stdout.strip()).parent.parent)


def commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


async def metrics_refusals(session: aiohttp.ClientSession, ctl: ControllerProcess) -> list[str]:
    async with session.get(ctl.base + "/metrics") as response:
        text = await response.text()
    # Sample lines, and the TYPE line of each family: a counter that never counted has
    # no sample, and its TYPE line still shows the server exports it.
    lines = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
        elif line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
        else:
            continue
        if "refus" in name:
            lines.append(line)
    return lines


async def run(connections: int, args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    # Flood connections the controller cuts mid-handshake or mid-write leave errors the
    # loop would print one by one; they are the point of the exercise, so count them.
    loop_errors: Counter[str] = Counter()
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: loop_errors.update([str(context.get("message", "?"))])
    )
    workdir = Path(tempfile.mkdtemp(prefix=f"myc-flood-{connections}-"))
    fd_limit = raise_fd_limit(connections)
    ctl = ControllerProcess(workdir / "home")
    client: DiscoveryClient | None = None
    sampler: RssSampler | None = None
    failed = True
    try:
        await ctl.start()
        assert ctl.proc is not None
        async with aiohttp.ClientSession() as session:
            await apply(session, ctl, service_yaml())
            root = workdir / "home" / "ca" / "root.pem"
            tls = ssl.create_default_context(cafile=str(root))
            tls.minimum_version = ssl.TLSVersion.TLSv1_3

            changes = Changes()
            client = DiscoveryClient(
                [ControllerAddress("127.0.0.1", ctl.discovery_port)],
                p.NodeInfo(
                    id="good-proxy",
                    namespace=NAMESPACE,
                    workload="caller",
                    labels={"app": "caller"},
                    address="198.18.0.1",
                    ports=[8080],
                ),
                trust_bundle=tls,
                on_update=changes.on_update,
                subscriptions=[f"{SERVICE}.{NAMESPACE}"],
            )
            client.on_stream_lost.append(changes.stream_lost)
            await client.start()
            await client.wait_for(lambda s: ROUTE_ENTRY in s, SYNC_TIMEOUT_SECONDS)
            changes.reconnects = 0

            sampler = RssSampler(ctl.proc.pid, args.rss_cap_mb * 2**20)
            sampler.start()
            await asyncio.sleep(args.rest_seconds)
            flood_start = time.monotonic()
            rest = sampler.controller_mb(flood_start - 1.0, flood_start)
            print(
                f"[{connections}] controller at rest {statistics.median(rest):.0f} MB; "
                f"flooding for up to {args.flood_seconds:g} s"
            )
            changing = asyncio.create_task(
                changes_during(session, ctl, changes, args.changes, args.flood_seconds)
            )
            flood_connections, ended_by, took = await flood(
                ctl.discovery_port,
                tls,
                connections,
                args.flood_seconds,
                sampler,
                reconnect=args.reconnect,
            )
            flood_end = time.monotonic()
            await changing
            with contextlib.suppress(TimeoutError):
                last_sent = changes.sent[-1] if changes.sent else flood_end
                await asyncio.wait_for(
                    changes.all_arrived.wait(),
                    max(0.0, last_sent + CHANGE_TIMEOUT_SECONDS - time.monotonic()),
                )
            await asyncio.sleep(max(0.0, flood_end + args.settle_seconds - time.monotonic()))
            after = sampler.controller_mb(time.monotonic() - 1.0, time.monotonic())
            refusal_lines = await metrics_refusals(session, ctl)
            # The peak may come after the flood let go: what it sent still sits in the
            # controller's socket buffers, and the controller goes on reading it.
            during = sampler.controller_mb(flood_start, flood_end)
            since = sampler.controller_mb(flood_start, time.monotonic())
            timeline = sampler.timeline_mb(flood_start, time.monotonic())
        sampler.stop()
        flood_result = flood_summary(flood_connections, ended_by, took)
        peak = max(since, default=0.0)
        rest_mb, after_mb = statistics.median(rest), statistics.median(after or [0.0])
        summary: dict[str, Any] = {
            "connections": connections,
            "commit": commit(),
            "controller_code": controller_code(),
            "controller_fd_limit": fd_limit,
            "flood_seconds": args.flood_seconds,
            "reconnect": args.reconnect,
            "rss_mb": {
                "rest": round(rest_mb),
                "peak": round(peak),
                "peak_while_flooding": round(max(during, default=0.0)),
                "after": round(after_mb),
                "after_seconds": args.settle_seconds,
                "each_second_from_flood_start": timeline,
            },
            "growth_per_connection_mb": rounded(
                (peak - rest_mb) / max(1, flood_result["connected"]), 2
            ),
            "growth_per_mib_sent_mb": rounded(
                (peak - rest_mb) / max(1.0, flood_result["bytes_sent"] / 2**20), 2
            ),
            "flood": flood_result,
            "push": changes.summary(flood_end),
            "metrics_refusals": refusal_lines,
            "bench_rss_peak_mb": round(sampler.bench_peak_mb()),
            "bench_loop_errors": dict(loop_errors),
            "wall_seconds": round(time.monotonic() - began, 1),
        }
        failed = False
        return summary
    finally:
        # The controller goes whatever else fails here: a leaked one holds its ports
        # and, after a flood, gigabytes.
        try:
            if sampler is not None:
                sampler.stop()
            if client is not None:
                await client.stop(leave=False)
        finally:
            stop_controller(ctl)
        if failed:
            print(f"[{connections}] failed; the controller's log: {ctl.log}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def stop_controller(ctl: ControllerProcess) -> None:
    try:
        ctl.stop()
    except subprocess.TimeoutExpired:
        ctl.kill()


def print_run(s: dict[str, Any]) -> None:
    tag, f, push, rss = f"[{s['connections']}]", s["flood"], s["push"], s["rss_mb"]
    print(
        f"{tag} RSS rest {rss['rest']} MB, peak {rss['peak']} MB "
        f"({rss['peak_while_flooding']} MB while flooding), after {rss['after']} MB; "
        f"{s['growth_per_connection_mb']} MB per connection, "
        f"{s['growth_per_mib_sent_mb']} MB per MiB sent"
    )
    print(
        f"{tag} flood ended by {f['ended_by']} after {f['seconds']} s: {f['connected']} "
        f"connected, {f['closed_by_server']} closed by the server (median "
        f"{f['close_after_header_median_s']} s after the header), "
        f"{f['bytes_sent'] / 2**20:.0f} MiB sent; outcomes {f['outcomes']}"
    )
    for when in ("during_flood", "after_flood"):
        x = push[when]
        print(
            f"{tag} pushes {when.replace('_', ' ')}: {x['arrived']}/{x['changes']} arrived, "
            f"{x['within_1s']} within 1 s, p50 {x['p50_ms']} ms, max {x['max_ms']} ms"
        )
    for line in s["metrics_refusals"]:
        print(f"{tag}   {line}")


def print_table(summaries: list[dict[str, Any]]) -> None:
    columns = (
        ("conns", 6),
        ("RSS rest/peak/after MB", 23),
        ("MB/conn", 8),
        ("closed by server", 17),
        ("median s", 9),
        ("MiB sent", 9),
        ("pushes <=1 s", 13),
        ("p50/max ms", 16),
        ("ended by", 11),
        ("wall s", 7),
    )
    print(" ".join(name.ljust(width) for name, width in columns))
    for s in summaries:
        f, rss = s["flood"], s["rss_mb"]
        during = s["push"]["during_flood"]
        cells = (
            s["connections"],
            f"{rss['rest']}/{rss['peak']}/{rss['after']}",
            s["growth_per_connection_mb"],
            f"{f['closed_by_server']}/{s['connections']}",
            f["close_after_header_median_s"],
            f"{f['bytes_sent'] / 2**20:.0f}",
            f"{during['within_1s']}/{during['changes']}",
            f"{during['p50_ms']}/{during['max_ms']}",
            f["ended_by"],
            s["wall_seconds"],
        )
        print(" ".join(str(c).ljust(w) for c, (_, w) in zip(cells, columns, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[40, 400, 2000],
        help="flood sizes, each run in turn against a fresh controller",
    )  # fmt: skip
    parser.add_argument("--flood-seconds", type=float, default=15.0)
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="each flood connection the controller closes is opened again until the "
        "flood's time is up (sustained pressure rather than one volley)",
    )
    parser.add_argument("--changes", type=int, default=None, help="default: one a flood second")
    parser.add_argument("--rest-seconds", type=float, default=2.0)
    parser.add_argument(
        "--settle-seconds", type=float, default=5.0, help="after the flood, before 'after' RSS"
    )
    parser.add_argument("--rss-cap-mb", type=int, default=RSS_CAP_MB)
    parser.add_argument(
        "--smoke", action="store_true", help="20 connections, a 3-s flood, one change (CI)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.connections, args.flood_seconds, args.changes = [20], 3.0, 1
        args.rest_seconds, args.settle_seconds = 1.0, 1.0
    if args.changes is None:
        args.changes = int(args.flood_seconds)
    # A SIGTERM (a CI timeout) must still stop the controller: make it an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:
        runner = asyncio.run
    summaries = []
    for connections in args.connections:
        summary = runner(run(connections, args))
        print_run(summary)
        summaries.append(summary)
    print()
    print_table(summaries)
    print(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
