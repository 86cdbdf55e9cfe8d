"""`make demo`: the most real thing the project can do today, step by step.

Starts a controller on the embedded store (home: .myc/demo), applies the bookinfo
resources with `myc apply`, shows them with `myc get`, connects three proxies over the
real discovery stream (two reviews workloads that register themselves, and productpage
that calls reviews), shifts reviews' traffic and shows the delta each proxy received.

Then real traffic: two reviews apps (v1, v2) behind their own sidecars, and a caller's
sidecar on 127.0.0.1:15001; requests are sent through it and the split, the shift and
an injected fault are counted from the answers. Everything keeps running afterwards;
`make demo-down` stops it all.
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
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mycelium.discovery import protocol as p
from mycelium.discovery.client import ControllerAddress, DiscoveryClient, Snapshot

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".myc" / "demo"
PID_FILE = HOME / "controller.pid"  # every *.pid under HOME is stopped by demo-down
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
    stopped = 0
    for pid_file in sorted(HOME.glob("*.pid")):
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        except (ValueError, ProcessLookupError):
            pass
        pid_file.unlink(missing_ok=True)
    console.print(f"stopped the demo ({stopped} processes)" if stopped else "nothing was running")


def start_process(
    name: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A background process of the demo, its pid kept for `make demo-down`."""
    with open(HOME / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    (HOME / f"{name}.pid").write_text(str(proc.pid))
    return proc


def wait_for(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"{what} did not come up; see the logs in {HOME}")
        time.sleep(0.1)


REVIEWS = {"v1": ("127.0.0.31", "127.0.0.131"), "v2": ("127.0.0.32", "127.0.0.132")}
CALLER = "http://127.0.0.1:15001"


def join_token(service_account: str) -> dict[str, str]:
    """The environment that gives a sidecar its identity: a fresh join token."""
    env = {**os.environ, "MYC_HOME": str(HOME)}
    token = subprocess.run(
        [MYC, "token", "create", "-n", "bookinfo", "--service-account", service_account],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    return {"MYC_JOIN_TOKEN": token}


def start_data_plane() -> None:
    """Two reviews apps behind their sidecars, and a caller's sidecar on 15001. Each
    sidecar gets its SVID with a join token, so they speak mTLS to each other: the
    bookinfo namespace is STRICT, and reviews only answers productpage's identity."""
    python = sys.executable
    app = str(ROOT / "examples" / "demo_app.py")
    for version, (pod, app_ip) in REVIEWS.items():
        start_process(f"app-reviews-{version}", [python, app, f"reviews-{version}", app_ip, "9080"])
        start_process(
            f"sidecar-reviews-{version}",
            [
                *(MYC, "--home", str(HOME), "proxy", "--id", f"reviews-{version}-pod"),
                *("--namespace", "bookinfo", "--workload", f"reviews-{version}-pod"),
                *("-l", "app=reviews", "-l", f"version={version}", "--port", "9080"),
                *("--address", pod, "--inbound-address", pod, "--app-address", app_ip),
                *("--service-account", "bookinfo-reviews", "--outbound", "127.0.0.1:0"),
                *("--admin", "127.0.0.1:0", "--health", "127.0.0.1:0"),
            ],
            join_token("bookinfo-reviews"),
        )
    start_process(
        "sidecar-productpage",
        [
            *(MYC, "--home", str(HOME), "proxy", "--id", "productpage-pod"),
            *("--namespace", "bookinfo", "--service-account", "bookinfo-productpage"),
            *("--subscribe", "reviews"),
        ],
        join_token("bookinfo-productpage"),
    )
    wait_for("the caller's sidecar", lambda: port_open(15001))


def send(count: int) -> Counter[str]:
    """`count` requests through the caller's sidecar; what answered, or why not."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        request = urllib.request.Request(CALLER + "/reviews/0", headers={"Host": "reviews"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                seen[response.headers.get("x-served-by", "?")] += 1
        except urllib.error.HTTPError as error:
            seen[f"{error.code} {error.headers.get('x-mycelium-reason', '')}"] += 1
    return seen


def show(title: str, seen: Counter[str]) -> None:
    table = Table(title=title)
    table.add_column("answered by (or why not)")
    table.add_column("requests", justify="right")
    for name, count in sorted(seen.items()):
        table.add_row(name, str(count))
    console.print(table)


def apply_text(text: str) -> None:
    env = {**os.environ, "MYC_HOME": str(HOME)}
    subprocess.run([MYC, "apply", "-f", "-"], input=text.encode(), check=True, env=env)


def traffic_demo() -> None:
    console.rule("real traffic: reviews v1 and v2 behind sidecars, called through 15001")
    with console.status("starting two apps and three sidecars..."):
        start_data_plane()
        wait_for("the reviews workloads", lambda: "reviews-v1" in send(5))
    bookinfo = BOOKINFO.read_text()
    show("200 requests, route 90/10", send(200))
    console.print("[bold cyan]$ myc apply -f - (reviews 0/100)[/]")
    apply_text(bookinfo.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 100"))
    time.sleep(0.5)  # the push takes tens of milliseconds; this is for the reader's eye
    show("200 requests after the shift", send(200))
    console.print("[bold cyan]$ myc apply -f - (abort 50 % with 503)[/]")
    apply_text(
        bookinfo.replace(
            "      timeout: 2s\n",
            "      timeout: 2s\n      fault: {abort: {httpStatus: 503, percentage: 50}}\n",
        )
    )
    time.sleep(0.5)
    show("200 requests with an injected fault", send(200))
    apply_text(bookinfo)
    console.print(
        "Try it: [bold]curl -si -H 'Host: reviews' http://127.0.0.1:15001/[/] "
        "(the caller's sidecar), and [bold]MYC_HOME=.myc/demo .venv/bin/myc status[/]."
    )


def proxy(node_id: str, **node: object) -> DiscoveryClient:
    """A discovery-only proxy; its join token proves the identity it claims (the
    controller lets no anonymous proxy in)."""
    subscriptions = node.pop("subscriptions", [])
    account = str(node["service_account"])
    return DiscoveryClient(
        [ControllerAddress("127.0.0.1", DISCOVERY_PORT)],
        p.NodeInfo(id=node_id, namespace="bookinfo", **node),  # type: ignore[arg-type]
        trust_bundle=HOME / "ca" / "root.pem",
        subscriptions=list(subscriptions),  # type: ignore[call-overload]
        token=join_token(account)["MYC_JOIN_TOKEN"],
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
        address="127.0.0.41",
        ports=[9080],
    )
    v2 = proxy(
        "reviews-v2-demo",
        workload="reviews-v2-demo",
        service_account="bookinfo-reviews",
        labels={"app": "reviews", "version": "v2"},
        address="127.0.0.42",
        ports=[9080],
    )
    page = proxy(
        "productpage-demo",
        workload="productpage-demo",
        service_account="bookinfo-productpage",
        labels={"app": "productpage", "version": "v1"},
        address="127.0.0.51",
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
    traffic_demo()
    console.rule("done")
    console.print(
        "The controller, the apps and their sidecars keep running "
        "(the three discovery-only demo proxies left cleanly, so their workloads were "
        "deregistered at once). Stop everything with [bold]make demo-down[/]."
    )


if __name__ == "__main__":
    main()
