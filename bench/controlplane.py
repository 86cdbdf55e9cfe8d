"""Control-plane benchmark: how fast does one route change reach every proxy that needs it?

A real `myc controller` process (embedded SQLite store, or a real etcd member started
here) holds N services (each with a DestinationPolicy and an HTTPRoute) spread over ten
namespaces. M lightweight discovery clients in this process connect over TLS, register a
workload each (leases and heartbeats included) and subscribe to a few services in their
namespace plus one "hot" service that every proxy calls. Then, one at a time, a route is
changed through the REST API and we time, from the moment the apply is sent, until every
proxy subscribed to that service has received and acknowledged the new route:

- `cold` changes touch an ordinary service (a handful of subscribers);
- `hot` changes touch the service every proxy subscribes to (all M must ACK).

Reported: p50/p99 of the time-to-all-ACKed per change, and the controller's RSS.
This is a benchmark, not a test: run it by hand, e.g.

    .venv/bin/python bench/controlplane.py --backend both
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.controller_process import ControllerProcess  # noqa: E402

from mycelium.discovery import protocol as p  # noqa: E402
from mycelium.discovery.client import ControllerAddress, DiscoveryClient, Snapshot  # noqa: E402

NAMESPACES = 10
HOT = "svc-0.ns-0"


def route_yaml(ns: str, name: str, w1: int, w2: int) -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{name: {name}}}]
  rules:
  - backendRefs:
    - {{name: {name}, subset: v1, weight: {w1}}}
    - {{name: {name}, subset: v2, weight: {w2}}}
"""


def namespace_yaml(ns: str, names: list[str]) -> str:
    docs = []
    for name in names:
        docs.append(f"""---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: {name}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
""")
        docs.append(route_yaml(ns, name, 50, 50))
    return "".join(docs)


@dataclass
class Proxy:
    client: DiscoveryClient
    subscriptions: list[str]


@dataclass
class Change:
    """The route change being timed: which proxies still have to accept it."""

    entry: str = ""
    weights: list[int] = field(default_factory=list)
    waiting: set[int] = field(default_factory=set)
    last_accepted: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def accepted(self, proxy_index: int, snapshot: Snapshot) -> None:
        if proxy_index not in self.waiting:
            return
        route = snapshot.get(self.entry)
        if route is None:
            return
        weights = [b["weight"] for b in route.body["http_rules"][0]["backends"]]
        if weights == self.weights:
            self.waiting.discard(proxy_index)
            self.last_accepted = time.monotonic()
            if not self.waiting:
                self.done.set()


async def apply(
    session: aiohttp.ClientSession, ctl: ControllerProcess, token: str, text: str
) -> None:
    body = {"files": [{"name": "bench.yaml", "content": text}]}
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(ctl.base + "/api/v1/apply", json=body, headers=headers) as r:
        if r.status != 200:
            raise SystemExit(f"apply failed: {r.status} {await r.text()}")


async def routes_arrived(proxy: Proxy) -> None:
    wanted = len(proxy.subscriptions)
    await proxy.client.wait_for(lambda s: sum(k.startswith("route/") for k in s) >= wanted, 120)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(backend: str, args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(42)
    workdir = Path(tempfile.mkdtemp(prefix=f"myc-bench-{backend}-"))
    etcd = None
    store_url = None
    if backend == "etcd":
        from tests.support.etcd import EtcdCluster

        etcd = EtcdCluster.start(1)
        store_url = etcd.url
    ctl = ControllerProcess(workdir / "home", store_url)
    await ctl.start()
    proxies: list[Proxy] = []
    try:
        async with aiohttp.ClientSession() as session:
            token = ctl.token
            per_ns = args.services // NAMESPACES
            names = [f"svc-{i}" for i in range(per_ns)]
            t0 = time.monotonic()
            for n in range(NAMESPACES):
                await apply(session, ctl, token, namespace_yaml(f"ns-{n}", names))
            print(
                f"[{backend}] applied {args.services} services (+policies, routes) "
                f"in {time.monotonic() - t0:.1f}s"
            )

            tls = ssl.create_default_context(cafile=str(workdir / "home" / "ca" / "root.pem"))
            tls.minimum_version = ssl.TLSVersion.TLSv1_3
            address = [ControllerAddress("127.0.0.1", ctl.discovery_port)]
            change = Change()
            for i in range(args.proxies):
                ns_index, svc_index = i % NAMESPACES, (i // NAMESPACES) % per_ns
                ns = f"ns-{ns_index}"
                subs = {f"svc-{rng.randrange(per_ns)}.{ns}" for _ in range(args.subscriptions)}
                subs.add(HOT)
                proxy = Proxy(client=None, subscriptions=sorted(subs))  # type: ignore[arg-type]

                def accepted(snapshot: Snapshot, version: str, index: int = i) -> None:
                    change.accepted(index, snapshot)

                proxy.client = DiscoveryClient(
                    address,
                    p.NodeInfo(
                        id=f"proxy-{i}",
                        namespace=ns,
                        workload=f"svc-{svc_index}-{i}",
                        labels={"app": f"svc-{svc_index}", "version": f"v{1 + i % 2}"},
                        address=f"198.18.{i // 250}.{i % 250 + 1}",
                        ports=[8080],
                    ),
                    trust_bundle=tls,
                    on_update=accepted,
                    subscriptions=proxy.subscriptions,
                )
                proxies.append(proxy)
            t0 = time.monotonic()
            batch = 100
            for start in range(0, len(proxies), batch):
                for proxy in proxies[start : start + batch]:
                    await proxy.client.start()
                await asyncio.gather(
                    *(x.client.connected.wait() for x in proxies[start : start + batch])
                )
            await asyncio.gather(*(routes_arrived(x) for x in proxies))
            connect_s = time.monotonic() - t0
            print(
                f"[{backend}] {len(proxies)} proxies connected and synced in {connect_s:.1f}s; "
                f"controller RSS {ctl.rss_mb:.0f} MB"
            )

            results: dict[str, list[float]] = {"cold": [], "hot": []}
            affected_counts: dict[str, list[int]] = {"cold": [], "hot": []}
            for n in range(args.changes):
                kind = "hot" if n % 4 == 3 else "cold"
                if kind == "hot":
                    ns, name = "ns-0", "svc-0"
                else:
                    ns, name = f"ns-{rng.randrange(NAMESPACES)}", f"svc-{rng.randrange(1, per_ns)}"
                change.entry = f"route/{name}.{ns}"
                change.weights = [1 + n, 100]
                change.waiting = {
                    i for i, x in enumerate(proxies) if change.entry in x.client.snapshot
                }
                affected = len(change.waiting)
                change.done.clear()
                started = time.monotonic()
                await apply(session, ctl, token, route_yaml(ns, name, 1 + n, 100))
                try:
                    await asyncio.wait_for(change.done.wait(), 30)
                except TimeoutError:
                    raise SystemExit(f"change {n} not acknowledged by all within 30 s") from None
                results[kind].append(change.last_accepted - started)
                affected_counts[kind].append(affected)
                # Let heartbeats and the controller settle between changes.
                await asyncio.sleep(0.2)
            rss = ctl.rss_mb
            cpu = ctl.cpu_seconds
            summary: dict[str, object] = {
                "backend": backend,
                "services": args.services,
                "proxies": len(proxies),
                "connect_seconds": round(connect_s, 1),
                "controller_rss_mb": round(rss),
                "controller_cpu_seconds": round(cpu, 1),
            }
            for kind in ("cold", "hot"):
                values = results[kind]
                if values:
                    summary[kind] = {
                        "changes": len(values),
                        "affected_proxies_median": statistics.median(affected_counts[kind]),
                        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
                        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                        "max_ms": round(max(values) * 1000, 1),
                    }
            return summary
    finally:
        for proxy in proxies:
            if proxy.client is not None:
                await proxy.client.stop()
        ctl.stop()
        if etcd is not None:
            etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "etcd", "both"], default="both")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--proxies", type=int, default=2000)
    parser.add_argument(
        "--subscriptions",
        type=int,
        default=4,
        help="services each proxy calls in its namespace (plus the hot one)",
    )
    parser.add_argument("--changes", type=int, default=40)
    args = parser.parse_args()
    backends = ["sqlite", "etcd"] if args.backend == "both" else [args.backend]
    summaries = []
    for backend in backends:
        try:
            import uvloop

            summaries.append(uvloop.run(run(backend, args)))
        except ImportError:
            summaries.append(asyncio.run(run(backend, args)))
    print(json.dumps(summaries, indent=2))
    os._exit(0)


if __name__ == "__main__":
    main()
