"""Micro-benchmark of the sidecar's HTTP/1.1 path: microseconds of Python per request.

`bench/sidecar.py` measures what a client sees through a real socket; this one
isolates the part the proxy's own code costs. One proxy core is wired to in-memory
transports (`tests/support/wired_proxy.py`): one route, one keep-alive client
connection, one idle upstream connection. Each iteration hands the client connection
the request wrk sends, and the upstream connection the response nginx sends back, and
checks that the response went out to the client. No socket, no event-loop turn: what
remains is parsing both heads, routing, balancing, the resilience bookkeeping and the
accounting.

Reported: the median over `--rounds` rounds of `--iterations` requests each, in us per
request; with `--profile`, a cProfile listing of one round instead. Run it by hand:

    .venv/bin/python bench/proxy_path.py
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.wired_proxy import Wired  # noqa: E402

# What `wrk -t1 -c32 http://.../ -H 'Host: backend'` sends, and nginx answers.
REQUEST = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 22:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 12\r\n"
    b"Connection: keep-alive\r\n\r\nhello world\n"
)


def run_round(wired: Wired, iterations: int) -> float:
    downstream, upstream = wired.downstream, wired.upstream
    client, server = wired.client.written, wired.server.written
    start = time.perf_counter_ns()
    for _ in range(iterations):
        downstream.data_received(REQUEST)
        upstream.data_received(RESPONSE)
    elapsed = time.perf_counter_ns() - start
    if len(client) != iterations or len(server) != iterations:
        raise SystemExit(f"expected {iterations} responses, the client got {len(client)}")
    client.clear()
    server.clear()
    return elapsed / iterations / 1000


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    args = parser.parse_args()
    wired = Wired()
    run_round(wired, 1000)  # warm up: the first request fills the caches
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_round(wired, args.iterations)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    samples = [run_round(wired, args.iterations) for _ in range(args.rounds)]
    median = statistics.median(samples)
    print(f"proxied request, Python only: {median:.2f} us (median of {args.rounds})")
    report = {
        "python": sys.version.split()[0],
        "iterations": args.iterations,
        "rounds": args.rounds,
        "us_per_request": round(median, 3),
        "samples": [round(s, 3) for s in samples],
    }
    print(json.dumps(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report) + "\n")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
