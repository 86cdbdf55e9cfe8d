"""mTLS latency benchmark: two sidecar hops at a fixed request rate, p50/p90/p99.

In one run, on loopback, the same nginx backend (one worker, 12-byte responses) is
loaded by `wrk -t1 -c16` at a fixed 1,000 requests/s through:

- nothing (direct: wrk -> nginx),
- two sidecars speaking plaintext to each other (wrk -> client sidecar's outbound
  listener, Host: plain-backend -> server sidecar's inbound listener on 127.0.0.31 ->
  nginx); neither proxy has a join token, so neither holds an SVID,
- two sidecars speaking mTLS (the same, on 127.0.0.32, Host: mtls-backend); both
  proxies get an SVID with a join token from the controller, and a PeerAuthentication
  makes the server's port STRICT.

Every proxy is its own `myc proxy` process, configured by a real `myc controller`
(embedded store); the server sidecars register their workloads themselves. Rounds are
interleaved (direct, plain, mtls, direct, ...) after one unrecorded warm-up per path,
and the medians are reported with what both sidecars add to the direct path's p50 and
p99. The target (the issue's): p99 added by both mTLS sidecars <= 1 ms.

wrk has no rate option; a Lua `delay()` paces it. It hands out send slots one
interval apart (1 ms for 1,000 req/s) on a monotonic clock, so requests are spread
evenly; a constant `delay() return 16` would send all 16 connections' requests in
bursts at the same timer tick, which measures queueing behind the burst instead (and
falls short of the rate by the latency). Latency is what wrk measures from writing a
request to reading its response; percentiles come exact from its histogram (Lua
`done()`).

The bench fails, rather than report, when the "mTLS" path was not mTLS: both of its
proxies must show an SVID on /config_dump, a plaintext request straight to the STRICT
port must be refused, and after the load the server sidecar's /stats must count mTLS
connections and at least as many requests as wrk completed; the plaintext path's
server must count none. Needs Debian's nginx-light and wrk (installed when missing, as
root). Run it by hand:

    .venv/bin/python bench/mtls_latency.py --seconds 10 --rounds 3

Every sidecar gets its own free port for each of its listeners (outbound, admin, health,
metrics): a listener left at its default (127.0.0.1:15020 for metrics) is bound by the
first sidecar only, and the other three exit at start. `--smoke` is CI's run
(tests/integration/bench): one 1-s round per path after a 1-s warm-up, every check
above included, to prove the bench still works, not to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sidecar import BODY, nginx_config, wait_http  # noqa: E402
from tests.support import host_packages  # noqa: E402
from tests.support.controller_process import ControllerProcess, free_port  # noqa: E402

PACKAGES = {"nginx": "nginx-light", "wrk": "wrk"}
PLAIN_SERVER_ADDRESS = "127.0.0.31"
MTLS_SERVER_ADDRESS = "127.0.0.32"
PATHS = ("direct", "plain", "mtls")

# Paced wrk: each call to delay() claims the next send slot of this wrk thread, one
# INTERVAL apart on CLOCK_MONOTONIC (through LuaJIT's ffi), and waits until it. wrk
# truncates the wait to whole milliseconds, so a request may leave up to 1 ms before
# its slot; the slots still advance by INTERVAL each, which holds the rate. A slot
# already past (every connection was busy) is not made up for.
PACE_LUA = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } myc_bench_timespec;
int clock_gettime(int clock_id, myc_bench_timespec *tp);
]]
local ts = ffi.new("myc_bench_timespec")
local CLOCK_MONOTONIC = 1
local interval = %(interval_ms)f
local next_slot = nil

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now then next_slot = now end
  local wait = next_slot - now
  next_slot = next_slot + interval
  return wait
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MYC-BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, '
    .. '"p99_us": %%d, "max_us": %%d, "errors": {"connect": %%d, "read": %%d, '
    .. '"write": %%d, "status": %%d, "timeout": %%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class BenchFailure(SystemExit):
    """The run cannot be trusted (not mTLS, errors, a process died): exit 1 with why."""

    def __init__(self, message: str) -> None:
        super().__init__(f"mtls_latency: {message}")


def ensure_tools() -> None:
    host_packages.ensure_tools(PACKAGES)


def free_port_on(*hosts: str) -> int:
    """A port number free on every given loopback address (nginx listens on 127.0.0.1
    and the server sidecars on their own addresses, all at the service's target port)."""
    for _ in range(50):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return port
    raise BenchFailure("no port free on every loopback address")


def manifest(target_port: int) -> str:
    """Two services on the same nginx, one behind each server sidecar; STRICT for mTLS."""
    services = "".join(
        f"""---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: {target_port}}}]
"""
        for name in ("plain-backend", "mtls-backend")
    )
    return (
        services
        + """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: mtls-backend-strict}
spec:
  selector: {matchLabels: {app: mtls-backend}}
  mtls: {mode: STRICT}
"""
    )


@dataclass
class Sidecar:
    name: str
    proc: subprocess.Popen[bytes]
    outbound: int
    admin: int
    health: int
    metrics: int
    log: Path

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.admin}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchFailure(f"sidecar {self.name} exited ({self.proc.returncode}):\n{tail}")

    def wait_ready(self, deadline: float = 30.0) -> None:
        """Until /healthz/ready answers 200; a sidecar that exits meanwhile (a port taken,
        a bad option) fails the run at once, with the end of its log."""
        url = f"http://127.0.0.1:{self.health}/healthz/ready"
        end = time.monotonic() + deadline
        while True:
            self.check_alive()
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
            if time.monotonic() > end:
                raise BenchFailure(f"sidecar {self.name} not ready after {deadline:g} s ({url})")
            time.sleep(0.1)


class Mesh:
    """A controller and the four sidecars; every process is stopped by `close`."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.home = work / "home"
        self.myc = str(Path(sys.executable).parent / "myc")
        self.controller: ControllerProcess | None = None
        self.sidecars: dict[str, Sidecar] = {}

    def start_controller(self, text: str) -> None:
        self.controller = ControllerProcess(self.home)
        asyncio.run(self.controller.start())
        self.cli("apply", "-f", "-", stdin=text)

    def cli(self, *args: str, stdin: str | None = None) -> str:
        assert self.controller is not None
        done = subprocess.run(
            [self.myc, "--controller", self.controller.base, "--home", str(self.home), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise BenchFailure(f"myc {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def join_token(self, service_account: str) -> str:
        return self.cli("token", "create", "--service-account", service_account, "--ttl", "10m")

    def start_sidecar(
        self, name: str, *options: str, service_account: str, join_token: str | None = None
    ) -> Sidecar:
        assert self.controller is not None
        # Each listener on its own free port: the defaults (15001, 15000, 15021, 15020)
        # can be bound by one sidecar only.
        outbound, admin, health, metrics = free_port(), free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k != "MYC_JOIN_TOKEN"}
        if join_token is not None:
            env["MYC_JOIN_TOKEN"] = join_token.strip()  # never on argv
        log = self.work / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    *(self.myc, "--home", str(self.home), "proxy", "--id", name),
                    *("--service-account", service_account),
                    *("--discovery", f"127.0.0.1:{self.controller.discovery_port}"),
                    *("--outbound", f"127.0.0.1:{outbound}"),
                    *("--admin", f"127.0.0.1:{admin}", "--health", f"127.0.0.1:{health}"),
                    *("--metrics", f"127.0.0.1:{metrics}"),
                    *("--drain-seconds", "1", *options),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        sidecar = Sidecar(name, proc, outbound, admin, health, metrics, log)
        self.sidecars[name] = sidecar
        return sidecar

    def close(self) -> None:
        for sidecar in self.sidecars.values():
            if sidecar.proc.poll() is None:
                sidecar.proc.terminate()
        for sidecar in self.sidecars.values():
            try:
                sidecar.proc.wait(15)
            except subprocess.TimeoutExpired:
                sidecar.proc.kill()
                sidecar.proc.wait(5)
        if self.controller is not None:
            self.controller.stop()


def wait_for(what: str, check: Any, deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        with contextlib.suppress(OSError, ValueError):
            found = check()
            if found:
                return found
        if time.monotonic() > end:
            raise BenchFailure(f"timed out waiting for {what}")
        time.sleep(0.1)


def plaintext_is_refused(host: str, port: int) -> bool:
    """A plaintext HTTP request straight to a STRICT inbound port must not be answered."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "mtls-backend"})
        return conn.getresponse().status != 200
    except (OSError, http.client.HTTPException):
        return True
    finally:
        conn.close()


def mtls_connections(server: Sidecar) -> int:
    """The mTLS connections a serving sidecar has accepted so far (handshakes done)."""
    return int(server.get("/stats")["counters"].get("mtls_connections", 0))


def wrk(script: Path, url: str, seconds: int, connections: int, host: str | None) -> dict[str, Any]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script)]
    if host is not None:
        args += ["-H", f"Host: {host}"]
    done = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("MYC-BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchFailure(f"wrk failed on {url}:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("MYC-BENCH "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests/s, all connections")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="seconds per path, unrecorded")
    parser.add_argument("--target-ms", type=float, default=1.0, help="p99 both sidecars add")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI: one 1-s round per path after a 1-s warm-up (overrides the three above)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary here")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.warmup = 1, 1, 1
    # SIGTERM too unwinds through `finally`, which stops every process this started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools()

    work = Path(tempfile.mkdtemp(prefix="myc-bench-mtls-"))
    script = work / "pace.lua"
    script.write_text(PACE_LUA % {"interval_ms": 1000.0 / args.rate})
    target = free_port_on("127.0.0.1", PLAIN_SERVER_ADDRESS, MTLS_SERVER_ADDRESS)
    mesh = Mesh(work)
    nginx: subprocess.Popen[bytes] | None = None
    failed = True
    try:
        nginx = subprocess.Popen(
            [host_packages.tool("nginx"), "-c", str(nginx_config(work, target, BODY, None))]
        )
        wait_http(f"http://127.0.0.1:{target}/")
        mesh.start_controller(manifest(target))

        server_options = ("--app-address", "127.0.0.1", "--port", str(target))
        plain_server = mesh.start_sidecar(
            "plain-server",
            *("--workload", "plain-server", "-l", "app=plain-backend"),
            *("--address", PLAIN_SERVER_ADDRESS, "--inbound-address", PLAIN_SERVER_ADDRESS),
            *server_options,
            service_account="plain-server",
        )
        mtls_server = mesh.start_sidecar(
            "mtls-server",
            *("--workload", "mtls-server", "-l", "app=mtls-backend"),
            *("--address", MTLS_SERVER_ADDRESS, "--inbound-address", MTLS_SERVER_ADDRESS),
            *server_options,
            service_account="mtls-server",
            join_token=mesh.join_token("mtls-server"),
        )
        plain_client = mesh.start_sidecar(
            "plain-client", "--subscribe", "plain-backend", service_account="plain-client"
        )
        mtls_client = mesh.start_sidecar(
            "mtls-client",
            *("--subscribe", "mtls-backend"),
            service_account="mtls-client",
            join_token=mesh.join_token("mtls-client"),
        )
        for sidecar in mesh.sidecars.values():
            sidecar.wait_ready()

        # The mTLS pair holds SVIDs, the plaintext pair none.
        identities = {}
        for sidecar in (mtls_server, mtls_client):
            identity = wait_for(
                f"{sidecar.name}'s SVID", lambda s=sidecar: s.get("/config_dump")["identity"]
            )
            identities[sidecar.name] = identity["spiffeId"]
        for sidecar in (plain_server, plain_client):
            if sidecar.get("/config_dump")["identity"] is not None:
                raise BenchFailure(f"{sidecar.name} holds an SVID: the plain path would be mTLS")

        client_url = "http://127.0.0.1:{}/"
        targets: dict[str, tuple[str, str | None]] = {
            "direct": (f"http://127.0.0.1:{target}/", None),
            "plain": (client_url.format(plain_client.outbound), "plain-backend"),
            "mtls": (client_url.format(mtls_client.outbound), "mtls-backend"),
        }
        for url, host in targets.values():
            wait_http(url, {"Host": host} if host else None)
        if not plaintext_is_refused(MTLS_SERVER_ADDRESS, target):
            raise BenchFailure("the mTLS server's STRICT port answered a plaintext request")

        print(
            f"wrk -t1 -c{args.connections} paced at {args.rate:g} req/s, {args.seconds} s per "
            f"path, {args.rounds} interleaved rounds after a {args.warmup} s warm-up each",
            flush=True,
        )
        for url, host in targets.values():
            wrk(script, url, args.warmup, args.connections, host)

        pairs = {"plain": (plain_client, plain_server), "mtls": (mtls_client, mtls_server)}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in PATHS}
        for round_ in range(args.rounds):
            for name in PATHS:
                url, host = targets[name]
                pair = pairs.get(name, ())
                cpu_before = [s.cpu_seconds() for s in pair]
                dials_before = mtls_connections(mtls_server) if name == "mtls" else 0
                result = wrk(script, url, args.seconds, args.connections, host)
                result["cpu_us_per_request"] = [
                    round((s.cpu_seconds() - before) / result["requests"] * 1e6, 1)
                    for s, before in zip(pair, cpu_before, strict=True)
                ]
                # mTLS connections the client's pool opened during the round: each one
                # is a full handshake that a request waited for.
                if name == "mtls":
                    result["new_mtls_connections"] = mtls_connections(mtls_server) - dials_before
                results[name].append(result)
                errors = sum(result["errors"].values())
                print(
                    f"round {round_ + 1} {name:6s} {result['rps']:7.1f} req/s  "
                    f"p50 {ms(result['p50_us'])}  p90 {ms(result['p90_us'])}  "
                    f"p99 {ms(result['p99_us'])} ms  max {ms(result['max_us'])} ms"
                    + (
                        f"  {result['new_mtls_connections']} new mTLS connections"
                        if name == "mtls"
                        else ""
                    )
                    + (f"  ERRORS {result['errors']}" if errors else ""),
                    flush=True,
                )
            for sidecar in mesh.sidecars.values():
                sidecar.check_alive()

        # Was the mTLS path mTLS, all of it, and the plain path plaintext?
        mtls_stats = mtls_server.get("/stats")["counters"]
        plain_stats = plain_server.get("/stats")["counters"]
        mtls_requests = sum(r["requests"] for r in results["mtls"])
        plain_requests = sum(r["requests"] for r in results["plain"])
        problems = []
        if mtls_stats.get("mtls_connections", 0) < 1:
            problems.append(f"the mTLS server counted no mTLS connection: {mtls_stats}")
        if mtls_stats.get("requests", 0) < mtls_requests:
            problems.append(
                f"the mTLS server counted {mtls_stats.get('requests', 0)} requests, "
                f"wrk completed {mtls_requests} through it"
            )
        if mtls_stats.get("mtls_refused_plaintext", 0) < 1:
            problems.append("the mTLS server did not count the refused plaintext probe")
        if plain_stats.get("mtls_connections", 0) != 0:
            problems.append(f"the plaintext server counted mTLS connections: {plain_stats}")
        if plain_stats.get("requests", 0) < plain_requests:
            problems.append(
                f"the plaintext server counted {plain_stats.get('requests', 0)} requests, "
                f"wrk completed {plain_requests} through it"
            )
        error_runs = [
            (name, i + 1, r["errors"])
            for name, runs in results.items()
            for i, r in enumerate(runs)
            if sum(r["errors"].values())
        ]
        if error_runs:
            problems.append(f"wrk saw errors (round, counts): {error_runs}")
        if problems:
            raise BenchFailure("the run cannot be trusted:\n- " + "\n- ".join(problems))

        medians = {
            name: {
                key: statistics.median(r[key] for r in runs)
                for key in ("rps", "p50_us", "p90_us", "p99_us", "max_us")
            }
            for name, runs in results.items()
        }
        direct = medians["direct"]
        print()
        print(
            f"{'path':8s} {'req/s':>7s} {'p50 ms':>7s} {'p90 ms':>7s} {'p99 ms':>7s} "
            f"{'+p50 ms':>8s} {'+p99 ms':>8s}  CPU us/req client, server"
        )
        summary: dict[str, Any] = {}
        for name in PATHS:
            m = medians[name]
            entry: dict[str, Any] = {
                "rps": round(m["rps"], 1),
                "p50_ms": round(m["p50_us"] / 1000, 3),
                "p90_ms": round(m["p90_us"] / 1000, 3),
                "p99_ms": round(m["p99_us"] / 1000, 3),
                "max_ms": round(m["max_us"] / 1000, 3),
                "p99_ms_per_round": [r["p99_us"] / 1000 for r in results[name]],
            }
            if name == "mtls":
                entry["new_mtls_connections_per_round"] = [
                    r["new_mtls_connections"] for r in results[name]
                ]
            added = cpu = ""
            if name != "direct":
                entry["added_p50_ms"] = round((m["p50_us"] - direct["p50_us"]) / 1000, 3)
                entry["added_p99_ms"] = round((m["p99_us"] - direct["p99_us"]) / 1000, 3)
                entry["cpu_us_per_request"] = {
                    side: statistics.median(r["cpu_us_per_request"][i] for r in results[name])
                    for i, side in enumerate(("client", "server"))
                }
                added = f"{entry['added_p50_ms']:8.3f} {entry['added_p99_ms']:8.3f}"
                cpu = "{client:.0f}, {server:.0f}".format(**entry["cpu_us_per_request"])
            else:
                added = f"{'':8s} {'':8s}"
            summary[name] = entry
            print(
                f"{name:8s} {m['rps']:7.1f} {ms(m['p50_us']):>7s} {ms(m['p90_us']):>7s} "
                f"{ms(m['p99_us']):>7s} {added}  {cpu}"
            )
        added_p99 = summary["mtls"]["added_p99_ms"]
        verdict = "PASS" if added_p99 <= args.target_ms else "MISS"
        print(
            f"\ntarget: p99 added by both mTLS sidecars <= {args.target_ms:g} ms: {verdict} "
            f"({added_p99:.3f} ms; plaintext sidecars add {summary['plain']['added_p99_ms']:.3f})"
        )
        print(
            f"mTLS evidence: the server sidecar counted {mtls_stats['mtls_connections']} mTLS "
            f"connections and {mtls_stats['requests']} requests (wrk completed {mtls_requests} "
            f"in the rounds); peers {identities['mtls-client']} -> {identities['mtls-server']}"
        )
        low = [name for name in PATHS if medians[name]["rps"] < 0.98 * args.rate]
        if low:
            print(f"warning: below the {args.rate:g} req/s asked for: {', '.join(low)}")
        summary["target"] = {
            "added_p99_ms_max": args.target_ms,
            "mtls_added_p99_ms": added_p99,
            "verdict": verdict,
        }
        summary["mtls_evidence"] = {
            "identities": identities,
            "server_mtls_connections": mtls_stats.get("mtls_connections", 0),
            "server_requests": mtls_stats.get("requests", 0),
            "server_refused_plaintext": mtls_stats.get("mtls_refused_plaintext", 0),
        }
        summary["command"] = (
            f"wrk -t1 -c{args.connections} -d{args.seconds}s -s pace.lua "
            f"({args.rate:g} req/s), {args.rounds} interleaved rounds, medians"
        )
        print(json.dumps(summary, indent=2))
        if args.json is not None:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        failed = False
    finally:
        mesh.close()
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        if args.keep or failed:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
