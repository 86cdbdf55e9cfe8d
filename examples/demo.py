"""`make demo`: the most real thing the project can do today, step by step.

Starts a controller on the embedded store (home: .myc/demo), applies the bookinfo
resources with `myc apply`, shows them with `myc get`, connects three proxies over the
real discovery stream (two reviews workloads that register themselves, and productpage
that calls reviews), shifts reviews' traffic and shows the delta each proxy received.
The controller keeps running afterwards; `make demo-down` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mycelium.discovery import protocol as p
from mycelium.discovery.client import ControllerAddress, DiscoveryClient, Snapshot

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".myc" / "demo"
PID_FILE = HOME / "controller.pid"
BOOKINFO = ROOT / "examples" / "resources" / "bookinfo.yaml"
API_PORT, DISCOVERY_PORT = 15014, 15012
MYC = str(Path(sys.executable).parent / "myc")

console = Console()


def myc(*args: str) -> None:
    console.print(f"[bold cyan]$ myc {' '.join(args)}[/]")
    env = {**os.environ, "MYC_HOME": str(HOME)}
    subprocess.run([MYC, *args], check=True, env=env)


def running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_controller() -> None:
    if running_pid() is not None:
        console.print(f"controller already running (pid {running_pid()}), reusing it")
        return
    if port_open(API_PORT):
        sys.exit(f"port {API_PORT} is taken by another process; stop it or run 'make demo-down'")
    HOME.mkdir(parents=True, exist_ok=True)
    log = open(HOME / "controller.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [MYC, "controller", "--home", str(HOME)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PID_FILE.write_text(str(proc.pid))
    with console.status("starting the controller (embedded store)..."):
        deadline = time.monotonic() + 30
        while not port_open(API_PORT):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the controller did not start; see {HOME / 'controller.log'}")
            time.sleep(0.05)
    console.print(
        f"[green]controller up[/]: REST http://127.0.0.1:{API_PORT}, "
        f"discovery 127.0.0.1:{DISCOVERY_PORT} (TLS), store {HOME / 'store.db'}"
    )


def stop_controller() -> None:
    pid = running_pid()
    if pid is None:
        console.print("no demo controller is running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    PID_FILE.unlink(missing_ok=True)
    console.print(f"stopped the demo controller (pid {pid})")


def proxy(node_id: str, **node: object) -> DiscoveryClient:
    subscriptions = node.pop("subscriptions", [])
    return DiscoveryClient(
        [ControllerAddress("127.0.0.1", DISCOVERY_PORT)],
        p.NodeInfo(id=node_id, namespace="bookinfo", **node),  # type: ignore[arg-type]
        trust_bundle=HOME / "ca" / "root.pem",
        subscriptions=list(subscriptions),  # type: ignore[call-overload]
    )


def split(snapshot: Snapshot) -> str:
    route = snapshot.get("route/reviews.bookinfo")
    if route is None:
        return "-"
    rule = route.body["http_rules"][0]
    return ", ".join(f"{b['cluster']}={b['weight']}" for b in rule["backends"])


def show_snapshot(title: str, snapshot: Snapshot) -> None:
    table = Table(title=title)
    table.add_column("entry")
    table.add_column("version")
    table.add_column("what it says")
    for name in sorted(snapshot):
        body = snapshot[name].body
        if name.startswith("endpoints/"):
            what = ", ".join(f"{e['workload']}@{e['address']}" for e in body["endpoints"]) or "none"
        elif name.startswith("route/"):
            what = f"{len(body['http_rules'])} rules; first: " + ", ".join(
                f"{b['cluster']}={b['weight']}" for b in body["http_rules"][0]["backends"]
            )
        elif name.startswith("cluster/"):
            what = f"balancer {body['balancer']}"
        elif name == "inbound":
            what = f"{body['identity']}; ports {[x['port'] for x in body['ports']]}"
        else:
            what = ""
        table.add_row(name, snapshot[name].version, what)
    console.print(table)


async def proxies_demo() -> None:
    v1 = proxy(
        "reviews-v1-demo",
        workload="reviews-v1-demo",
        service_account="bookinfo-reviews",
        labels={"app": "reviews", "version": "v1"},
        address="198.18.10.11",
        ports=[9080],
    )
    v2 = proxy(
        "reviews-v2-demo",
        workload="reviews-v2-demo",
        service_account="bookinfo-reviews",
        labels={"app": "reviews", "version": "v2"},
        address="198.18.10.12",
        ports=[9080],
    )
    page = proxy(
        "productpage-demo",
        workload="productpage-demo",
        service_account="bookinfo-productpage",
        labels={"app": "productpage", "version": "v1"},
        address="198.18.10.21",
        ports=[9080],
        subscriptions=["reviews", "details"],
    )
    for client in (v1, v2, page):
        await client.start()
    console.rule("three proxies connect over TLS; two register their workloads")
    await page.wait_for(
        lambda s: all(
            len(s.get(f"endpoints/reviews.bookinfo/{v}", _NONE).body["endpoints"]) == 1
            for v in ("v1", "v2")
        ),
        timeout=15,
    )
    show_snapshot("productpage's snapshot (only what it calls)", page.snapshot)
    await asyncio.to_thread(myc, "get", "workloads", "-n", "bookinfo", "-o", "wide")

    console.rule("shift reviews to v2 (0/100): one delta to productpage")
    shifted = (
        BOOKINFO.read_text().replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 100")
    )
    started = time.monotonic()
    env = {**os.environ, "MYC_HOME": str(HOME)}
    console.print("[bold cyan]$ myc apply -f - (reviews 0/100)[/]")
    await asyncio.to_thread(
        subprocess.run, [MYC, "apply", "-f", "-"], input=shifted.encode(), check=True, env=env
    )
    await page.wait_for(lambda s: "weight" not in split(s) and "/v2=100" in split(s), 15)
    console.print(
        f"productpage acknowledged [bold]{split(page.snapshot)}[/] "
        f"{(time.monotonic() - started) * 1000:.0f} ms after `myc apply` was started "
        "(its own start-up included)"
    )
    await asyncio.to_thread(myc, "status")
    await asyncio.to_thread(myc, "apply", "-f", str(BOOKINFO))
    await page.wait_for(lambda s: "/v1=90" in split(s), 15)
    for client in (v1, v2, page):
        await client.stop()


_NONE = type("NoEntry", (), {"body": {"endpoints": []}})()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--down", action="store_true", help="stop the demo controller")
    args = parser.parse_args()
    if args.down:
        stop_controller()
        return
    start_controller()
    console.rule("apply the bookinfo resources")
    myc("apply", "-f", str(BOOKINFO))
    myc("get", "services", "-n", "bookinfo")
    myc("get", "httproutes", "-n", "bookinfo", "-o", "wide")
    asyncio.run(proxies_demo())
    console.rule("done")
    console.print(
        "The controller keeps running: try [bold]MYC_HOME=.myc/demo .venv/bin/myc get all -A[/]. "
        "The demo proxies have exited, so their workloads leave the registry within 15 s "
        "(their leases expire). Stop it with [bold]make demo-down[/]."
    )


if __name__ == "__main__":
    main()
