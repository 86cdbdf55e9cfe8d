"""Sidecar benchmark: one proxy hop, HTTP/1.1 keep-alive, small responses.

In one run, on this machine, the same nginx backend (one worker, 12-byte responses) is
loaded with `wrk -t1 -c32` through:

- nothing (direct),
- HAProxy 2.6 with one thread, HTTP mode, keep-alive to the backend,
- nginx with one worker, proxy_pass with upstream keep-alive,
- a Mycelium sidecar (`myc proxy`, configured by a real controller), one hop.

Rounds are interleaved so that machine noise hits every path alike; the medians of
requests/s and p99 are reported with ratios to HAProxy, nginx and direct, plus the
sidecar's RSS when idle and after the load. Needs Debian's haproxy, nginx-light and wrk
(installed on first run when root). Run it by hand:

    .venv/bin/python bench/sidecar.py --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import host_packages  # noqa: E402
from tests.support.controller_process import ControllerProcess, free_port  # noqa: E402

PACKAGES = {"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk"}
BODY = "hello world\n"  # 12 bytes, as in DESIGN.md's reference figures


def ensure_tools() -> None:
    host_packages.ensure_tools(PACKAGES)


def nginx_config(work: Path, listen: int, body: str | None, upstream: int | None) -> Path:
    conf = work / f"nginx-{listen}.conf"
    if upstream is None:
        location = f'return 200 "{body}";'
        upstream_block = ""
    else:
        location = (
            'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
        )
        upstream_block = f"upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {work}/nginx-{listen}.pid;
error_log {work}/nginx-{listen}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  {upstream_block}
  server {{
    listen 127.0.0.1:{listen} backlog=4096;
    location / {{ default_type text/plain; {location} }}
  }}
}}
"""
    )
    return conf


def haproxy_config(work: Path, listen: int, upstream: int) -> Path:
    conf = work / "haproxy.cfg"
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{listen}
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{upstream}
"""
    )
    return conf


def wait_http(url: str, headers: dict[str, str] | None = None, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200")


def wrk(url: str, seconds: int, headers: dict[str, str] | None = None) -> tuple[float, float, int]:
    """requests/s, p99 in ms, and how many requests completed."""
    args = ["wrk", "-t1", "-c32", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_text is not None, out
    value, unit = float(p99_text.group(1)), p99_text.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"warning: errors through {url}:\n{out}", file=sys.stderr)
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p99_ms, done


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def start_sidecar_mesh(
    work: Path, manifest: str, subscriptions: list[str]
) -> tuple[ControllerProcess, subprocess.Popen[bytes], int, int]:
    """A controller holding `manifest`, and one sidecar subscribed to `subscriptions`.

    Returns the controller, the sidecar process, its outbound port and its health port.
    """
    controller = ControllerProcess(work / "home")
    asyncio.run(controller.start())
    myc = str(Path(sys.executable).parent / "myc")
    home = str(work / "home")
    subprocess.run(
        [myc, "--controller", controller.base, "--home", home, "apply", "-f", "-"],
        input=manifest.encode(),
        check=True,
        capture_output=True,
    )
    proxy, outbound, health = start_sidecar(work, controller, subscriptions)
    return controller, proxy, outbound, health


def start_sidecar(
    work: Path,
    controller: ControllerProcess,
    subscriptions: list[str],
    name: str = "bench-sidecar",
    extra: tuple[str, ...] = (),
    *,
    admin: int | None = None,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """One more sidecar of `controller`'s mesh: the process, its outbound and health ports."""
    myc = str(Path(sys.executable).parent / "myc")
    outbound, health = free_port(), free_port()
    admin = admin or free_port()
    subscribe = [arg for service in subscriptions for arg in ("--subscribe", service)]
    with open(work / f"{name}.log", "wb") as log:
        proxy = subprocess.Popen(
            [
                *(myc, "--home", str(work / "home"), "proxy", "--id", name),
                *("--discovery", f"127.0.0.1:{controller.discovery_port}"),
                *("--outbound", f"127.0.0.1:{outbound}", "--admin", f"127.0.0.1:{admin}"),
                *("--health", f"127.0.0.1:{health}", "--metrics", f"127.0.0.1:{free_port()}"),
                *subscribe,
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wait_http(f"http://127.0.0.1:{health}/healthz/ready")
    return proxy, outbound, health


def start_mesh(
    work: Path, backend_port: int
) -> tuple[ControllerProcess, subprocess.Popen[bytes], int, int]:
    """The backend registered as a static workload behind one sidecar."""
    manifest = f"""apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 80, targetPort: {backend_port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: backend-0, labels: {{app: backend}}}}
spec: {{address: 127.0.0.1}}
"""
    controller, proxy, outbound, health = start_sidecar_mesh(work, manifest, ["backend"])
    wait_http(f"http://127.0.0.1:{outbound}/", {"Host": "backend"})
    return controller, proxy, outbound, health


class SpanSink(http.server.BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector that takes every batch and keeps nothing: the
    bench measures the sidecar's side of tracing, not a collector's."""

    spans = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        SpanSink.spans += body.count(b'"spanId"')
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_span_sink() -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), SpanSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def proxy_counters(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5) as response:
        stats: dict[str, object] = json.load(response)
    counters = stats.get("counters", stats)
    assert isinstance(counters, dict)
    return counters


def report(summary: dict[str, object], path: Path | None) -> None:
    """The summary as JSON on stdout, and in `path` too when given (for a harness)."""
    text = json.dumps(summary, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="Only the sidecars: without telemetry (--no-metrics), with metrics, with "
        "metrics and 1 %% or all requests traced, and with metrics and an access log.",
    )
    parser.add_argument(
        "--metrics-only",
        action="store_true",
        help="Only the sidecars without telemetry and with metrics (the cost of metrics).",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the summary here")
    args = parser.parse_args()
    sidecars_only = args.telemetry or args.metrics_only
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="myc-bench-sidecar-"))
    backend, nginx_proxy, haproxy_port = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [host_packages.tool("nginx"), "-c", str(nginx_config(work, backend, BODY, None))]
        ),
        subprocess.Popen(
            [host_packages.tool("nginx"), "-c", str(nginx_config(work, nginx_proxy, None, backend))]
        ),
        subprocess.Popen(
            [host_packages.tool("haproxy"), "-f", str(haproxy_config(work, haproxy_port, backend))]
        ),
    ]
    controller = proxy = None
    sidecars: list[subprocess.Popen[bytes]] = []
    sink: http.server.ThreadingHTTPServer | None = None
    try:
        for port in (backend, nginx_proxy, haproxy_port):
            wait_http(f"http://127.0.0.1:{port}/")
        controller, proxy, outbound, _ = start_mesh(work, backend)
        sidecars.append(proxy)
        idle_rss = psutil.Process(proxy.pid).memory_info().rss / 2**20
        pids = {"mycelium": proxy.pid}
        ports = {"mycelium": outbound}
        # The same sidecar without per-request telemetry: what recording it costs.
        variants: dict[str, tuple[str, ...]] = {"mycelium_no_metrics": ("--no-metrics",)}
        traced_admin = free_port()
        if args.telemetry:
            sink, sink_port = start_span_sink()
            collector = ("--trace-collector", f"http://127.0.0.1:{sink_port}")
            # Istio's default sampling (1 %), and every request traced
            variants["mycelium_traced_1pct"] = (*collector, "--trace-sampling", "0.01")
            variants["mycelium_traced"] = (*collector, "--trace-sampling", "1")
            variants["mycelium_logged"] = ("--access-log", str(work / "access.log"))
        for name, extra in variants.items():
            admin = traced_admin if name == "mycelium_traced" else None
            sidecar, port, _ = start_sidecar(
                work, controller, ["backend"], name.replace("_", "-"), extra, admin=admin
            )
            sidecars.append(sidecar)
            wait_http(f"http://127.0.0.1:{port}/", {"Host": "backend"})
            pids[name], ports[name] = sidecar.pid, port
        targets: dict[str, tuple[str, dict[str, str] | None]] = {
            "direct": (f"http://127.0.0.1:{backend}/", None),
            "haproxy": (f"http://127.0.0.1:{haproxy_port}/", None),
            "nginx": (f"http://127.0.0.1:{nginx_proxy}/", None),
        }
        if sidecars_only:
            targets = {}
        for name, port in ports.items():
            targets[name] = (f"http://127.0.0.1:{port}/", {"Host": "backend"})
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        # The sidecars' CPU time per request (µs): steadier than requests/s on a shared
        # machine, since it does not depend on what else got the cores meanwhile.
        cpu_us: dict[str, list[float]] = {name: [] for name in pids}
        for round_ in range(args.rounds):
            # ABBA order: a drift in the machine's load over a round hits all alike.
            order = list(targets.items())
            for name, (url, headers) in order if round_ % 2 == 0 else reversed(order):
                before = cpu_seconds(pids[name]) if name in pids else 0.0
                rps, p99, done = wrk(url, args.seconds, headers)
                results[name].append((rps, p99))
                line = f"round {round_ + 1} {name:9s} {rps:10.0f} req/s p99 {p99:.2f} ms"
                if name in pids:
                    cpu_us[name].append((cpu_seconds(pids[name]) - before) / done * 1e6)
                    line += f" {cpu_us[name][-1]:.1f} µs CPU/request"
                print(line, flush=True)
        loaded_rss = psutil.Process(proxy.pid).memory_info().rss / 2**20
        summary: dict[str, object] = {}
        medians = {
            name: (statistics.median(r for r, _ in runs), statistics.median(p for _, p in runs))
            for name, runs in results.items()
        }
        for name, (rps, p99) in medians.items():
            summary[name] = {"rps": round(rps), "p99_ms": round(p99, 3)}
        my_rps, my_p99 = medians["mycelium"]
        bare_us = statistics.median(cpu_us["mycelium_no_metrics"])
        # Each sidecar against the one without telemetry: requests/s per round (the
        # machine's noise moves a whole round), and CPU time per request.
        for name in pids:
            if name == "mycelium_no_metrics":
                continue
            per_round = [
                round(m[0] / b[0], 3)
                for m, b in zip(results[name], results["mycelium_no_metrics"], strict=True)
            ]
            with_us = statistics.median(cpu_us[name])
            summary[f"{name}_vs_no_telemetry"] = {
                "rps_per_round_median": statistics.median(per_round),
                "rps_of_medians": round(medians[name][0] / medians["mycelium_no_metrics"][0], 3),
                "cpu_us_per_request": round(with_us, 2),
                "cpu_us_without": round(bare_us, 2),
                "cpu_share": round((with_us - bare_us) / with_us, 3),
            }
        if args.telemetry:
            counters = proxy_counters(traced_admin)
            summary["tracing"] = {
                "spans_exported": counters.get("trace_spans_exported", 0),
                "spans_dropped": counters.get("trace_spans_dropped", 0),
                "spans_received_by_sink": SpanSink.spans,
            }
        summary["command"] = f"wrk -t1 -c32 -d{args.seconds}s, {args.rounds} ABBA rounds"
        if sidecars_only:
            report(summary, args.json)
            return
        # Each round's own ratio too: the machine's noise moves a whole round, so a
        # ratio within a round is steadier than a ratio of medians taken apart.
        per_round = [
            round(m[0] / h[0], 3)
            for m, h in zip(results["mycelium"], results["haproxy"], strict=True)
        ]
        summary["rps_vs_haproxy_per_round"] = {
            "median": statistics.median(per_round),
            "min": min(per_round),
            "max": max(per_round),
        }
        summary["ratios"] = {
            "rps_vs_haproxy": round(my_rps / medians["haproxy"][0], 3),
            "rps_vs_nginx": round(my_rps / medians["nginx"][0], 3),
            "rps_vs_direct": round(my_rps / medians["direct"][0], 3),
            "p99_vs_haproxy": round(my_p99 / medians["haproxy"][1], 3),
            "p99_vs_nginx": round(my_p99 / medians["nginx"][1], 3),
        }
        summary["sidecar_rss_mb"] = {"idle": round(idle_rss, 1), "after_load": round(loaded_rss, 1)}
        report(summary, args.json)
    finally:
        for sidecar in sidecars:
            sidecar.terminate()
            sidecar.wait(15)
        if sink is not None:
            sink.shutdown()
        if controller is not None:
            controller.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
