"""HTTP/2 and gRPC through one sidecar hop, against HAProxy and the direct path.

HTTP/2: nginx (one worker) serves 12-byte responses over h2c (prior knowledge);
`h2load -c4 -m10` loads it directly, through HAProxy 2.6 (one thread, h2c on both
sides) and through a Mycelium sidecar (h2c in, one multiplexed h2c connection out).

gRPC unary: a grpcio server with one bytes-in/bytes-out method, called by h2load
sending real gRPC requests (length-prefixed message, `content-type: application/grpc`,
`te: trailers`), directly, through HAProxy (h2c both sides) and through the sidecar.
The grpcio server is Python and shares the machine: the ratios matter, not the absolute
figures.

Rounds are interleaved; medians are reported with ratios. Run by hand:

    .venv/bin/python bench/sidecar_h2.py --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sidecar import BODY, ensure_tools, start_sidecar_mesh  # noqa: E402
from tests.support import host_packages  # noqa: E402
from tests.support.controller_process import ControllerProcess, free_port  # noqa: E402

METHOD = "/bench.Echo/Say"


def nginx_h2c_config(work: Path, listen: int) -> Path:
    conf = work / f"nginx-h2c-{listen}.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {work}/nginx-h2c.pid;
error_log {work}/nginx-h2c.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{listen} http2;
    http2_max_concurrent_streams 1000;
    keepalive_requests 10000000;
    location / {{ default_type text/plain; return 200 "{BODY}"; }}
  }}
}}
"""
    )
    return conf


def haproxy_h2_config(work: Path, routes: dict[int, int]) -> Path:
    frontends = "\n".join(
        f"""frontend fe{listen}
  bind 127.0.0.1:{listen} proto h2
  default_backend be{listen}
backend be{listen}
  server s1 127.0.0.1:{upstream} proto h2"""
        for listen, upstream in routes.items()
    )
    conf = work / "haproxy-h2.cfg"
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
{frontends}
"""
    )
    return conf


def h2load(
    url: str, seconds: int, authority: str | None = None, grpc_body: Path | None = None
) -> float:
    args = ["h2load", "-c4", "-m10", f"-D{seconds}", "--warm-up-time=1"]
    if authority:
        args += ["-H", f":authority: {authority}"]
    if grpc_body is not None:
        args += ["-d", str(grpc_body), "-H", "content-type: application/grpc"]
        args += ["-H", "te: trailers"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    found = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if found is None or "0 failed" not in out.replace(" 0 errored", ""):
        print(out, file=sys.stderr)
    assert found is not None, out
    return float(found.group(1))


def start_grpc_server(port: int) -> grpc.Server:
    def say(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"hello " + request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def start_mesh(
    work: Path, h2_port: int, grpc_port: int
) -> tuple[ControllerProcess, subprocess.Popen[bytes], int]:
    """The h2c server and the gRPC server as static workloads behind one sidecar."""
    manifest = f"""apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: h2, port: 80, targetPort: {h2_port}, protocol: HTTP2}}]
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: echo}}
spec:
  selector: {{app: echo}}
  ports: [{{name: grpc, port: 50051, targetPort: {grpc_port}, protocol: GRPC}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: web-0, labels: {{app: web}}}}
spec: {{address: 127.0.0.1}}
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: echo-0, labels: {{app: echo}}}}
spec: {{address: 127.0.0.1}}
"""
    controller, proxy, outbound, _ = start_sidecar_mesh(work, manifest, ["web", "echo"])
    return controller, proxy, outbound


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_tools()
    host_packages.ensure_tools({"h2load": "nghttp2-client"})
    work = Path(tempfile.mkdtemp(prefix="myc-bench-h2-"))
    h2_port, grpc_port = free_port(), free_port()
    haproxy_h2, haproxy_grpc = free_port(), free_port()
    nginx = subprocess.Popen(
        [host_packages.tool("nginx"), "-c", str(nginx_h2c_config(work, h2_port))]
    )
    haproxy = subprocess.Popen(
        [
            host_packages.tool("haproxy"),
            "-f",
            str(haproxy_h2_config(work, {haproxy_h2: h2_port, haproxy_grpc: grpc_port})),
        ]
    )
    grpc_server = start_grpc_server(grpc_port)
    controller = proxy = None
    try:
        time.sleep(1.0)
        controller, proxy, outbound = start_mesh(work, h2_port, grpc_port)
        h2_targets = {
            "direct": (f"http://127.0.0.1:{h2_port}/", None),
            "haproxy": (f"http://127.0.0.1:{haproxy_h2}/", None),
            "mycelium": (f"http://127.0.0.1:{outbound}/", "web"),
        }
        grpc_targets = {
            "direct": (f"http://127.0.0.1:{grpc_port}{METHOD}", None),
            "haproxy": (f"http://127.0.0.1:{haproxy_grpc}{METHOD}", None),
            "mycelium": (f"http://127.0.0.1:{outbound}{METHOD}", "echo:50051"),
        }
        message = work / "grpc-message.bin"
        message.write_bytes(b"\x00\x00\x00\x00\x01x")  # uncompressed, 1 byte: "x"
        h2_results: dict[str, list[float]] = {k: [] for k in h2_targets}
        grpc_results: dict[str, list[float]] = {k: [] for k in grpc_targets}
        for round_ in range(args.rounds):
            for name, (url, authority) in h2_targets.items():
                h2_results[name].append(h2load(url, args.seconds, authority))
                print(
                    f"round {round_ + 1} h2   {name:9s} {h2_results[name][-1]:9.0f} req/s",
                    flush=True,
                )
            for name, (target, authority) in grpc_targets.items():
                grpc_results[name].append(h2load(target, args.seconds, authority, message))
                print(
                    f"round {round_ + 1} grpc {name:9s} {grpc_results[name][-1]:9.0f} calls/s",
                    flush=True,
                )
        summary: dict[str, object] = {}
        for label, results in (("http2", h2_results), ("grpc_unary", grpc_results)):
            medians = {name: statistics.median(values) for name, values in results.items()}
            summary[label] = {
                **{name: round(value) for name, value in medians.items()},
                "mycelium_vs_haproxy": round(medians["mycelium"] / medians["haproxy"], 3),
                "mycelium_vs_direct": round(medians["mycelium"] / medians["direct"], 3),
            }
        summary["command"] = (
            f"h2load -c4 -m10 -D{args.seconds} (HTTP/2 GETs; gRPC unary POSTs); "
            f"{args.rounds} interleaved rounds"
        )
        print(json.dumps(summary, indent=2))
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(15)
        if controller is not None:
            controller.stop()
        grpc_server.stop(0)
        for proc in (nginx, haproxy):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
