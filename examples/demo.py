"""`make demo`: bookinfo on a real mesh on this machine, one step at a time.

1. `myc up -f examples/bookinfo/mesh.yaml`: a controller on the embedded store, the
   node agent, and every pod with its sidecar (network namespaces as root, processes
   on loopback addresses otherwise), shown as they become ready;
2. traffic through the ingress gateway (http://127.0.0.1:8080), counted by the
   reviews version that served each page;
3. reviews shifted 90/10 between v1 and v2, then 0/100 to v3;
4. a fault injected on ratings (half of the calls answered 503), and removed;
5. an authorization policy that denies the product page, seen as a 403 and its reason,
   and removed;
6. reviews split 40/30/30 again, and left so: a reload of the page varies.

The mesh keeps running afterwards, with the URL to open; `make demo-down` (or `myc down`
with MYC_HOME=.myc/demo) stops it and removes everything it made.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mycelium.runtime.local_mesh import LocalMesh

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".myc" / "demo"
MANIFEST = ROOT / "examples" / "bookinfo" / "mesh.yaml"
CONTROLLER = "http://127.0.0.1:15014"
ENTRY = "http://127.0.0.1:8080/productpage"  # the ingress gateway's hostPort
MYC = str(Path(sys.executable).parent / "myc")
REQUESTS = 200
START_TIMEOUT_SECONDS = 180.0

console = Console()


# --- running myc ------------------------------------------------------------------------


def myc_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
    env.update(MYC_HOME=str(HOME), MYC_CONTROLLER=CONTROLLER)
    return env


def myc(*args: str, stdin: str | None = None) -> str:
    console.print(f"[bold cyan]$ myc {' '.join(args)}[/]")
    done = subprocess.run(
        [MYC, *args], input=stdin, capture_output=True, text=True, env=myc_env(), check=False
    )
    if done.returncode != 0:
        console.print(done.stdout + done.stderr)
        sys.exit(f"`myc {' '.join(args)}` failed (exit {done.returncode})")
    return done.stdout


def apply(text: str) -> None:
    for line in myc("apply", "-f", "-", stdin=text).splitlines():
        console.print(f"  {line}")


# --- step 1: the mesh -------------------------------------------------------------------


def start_mesh() -> None:
    mesh = LocalMesh(HOME, CONTROLLER)
    if mesh.agent_running():
        console.print(f"the demo mesh is already running (home {HOME}): reusing it")
        return
    pods_as = "netns" if os.geteuid() == 0 else "process"
    HOME.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]1. Start the mesh")
    console.print(
        f"[bold cyan]$ myc up -f {MANIFEST.relative_to(ROOT)} --pods {pods_as}[/]  "
        + (
            "(root: a network namespace per pod)"
            if pods_as == "netns"
            else "(not root: pods are processes on loopback addresses)"
        )
    )
    with open(HOME / "up.log", "w") as log:
        up = subprocess.Popen(
            [MYC, "up", "-f", str(MANIFEST), "--pods", pods_as],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=myc_env(),
        )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} pods ready"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("pods", total=None)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while up.poll() is None and time.monotonic() < deadline:
            pods = mesh.pods()
            progress.update(
                task, total=max(len(pods), 1), completed=sum(1 for p in pods if p["ready"])
            )
            time.sleep(0.2)
        pods = mesh.pods()
        progress.update(task, total=len(pods), completed=sum(1 for p in pods if p["ready"]))
    if up.poll() is None:
        up.kill()
    if up.returncode != 0:
        console.print((HOME / "up.log").read_text()[-3000:])
        sys.exit(f"the mesh did not start; see {HOME / 'up.log'} and `make demo-down`")
    table = Table("pod", "ready", "address", title="pods")
    for pod in mesh.pods():
        table.add_row(pod["name"], "yes" if pod["ready"] else "no", pod["address"])
    console.print(table)


# --- traffic ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    reviews: str  # the version that served the reviews, "-" when none did
    ratings_failed: bool
    reason: str  # x-mycelium-reason, when the mesh refused the request
    detail: str = ""  # the refusal's body: the sentence that says why


VERSION = re.compile(r'data-reviews-version="([^"]*)"')


def fetch(url: str = ENTRY) -> Page:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            body = response.read().decode(errors="replace")
            status = response.status
            reason = response.headers.get("x-mycelium-reason", "")
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        return Page(exc.code, "-", False, exc.headers.get("x-mycelium-reason", "") or "", detail)
    except (urllib.error.URLError, OSError) as exc:
        return Page(0, "-", False, str(exc))
    match = VERSION.search(body)
    return Page(status, match.group(1) if match else "-", "ratings unavailable" in body, reason)


def drive(title: str, count: int = REQUESTS) -> list[Page]:
    pages = [fetch() for _ in range(count)]
    by_version = Counter(p.reviews for p in pages if p.status == 200)
    statuses = Counter(p.status for p in pages)
    table = Table("reviews version", "pages", "share", title=f"{title}: {count} requests")
    for version in sorted(by_version):
        share = by_version[version] / count
        table.add_row(version, str(by_version[version]), f"{share:5.1%}")
    failed = count - statuses[200]
    if failed:
        table.add_row("[red]not 200[/]", str(failed), f"{failed / count:5.1%}")
    console.print(table)
    return pages


def wait_until(what: str, seconds: float = 15.0) -> None:
    """Config reaches the proxies in milliseconds, but not instantly: wait until one
    request shows the change, so the counts that follow are the new config's."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if WAITS[what](fetch()):
            return
        time.sleep(0.1)
    console.print(f"[yellow]{what}: not seen within {seconds:g} s; counting anyway[/]")


WAITS = {
    "v1 or v2 only": lambda page: page.reviews in ("v1", "v2"),
    "v3": lambda page: page.reviews == "v3",
    "ratings failing": lambda page: page.ratings_failed,
    "ratings healthy": lambda page: page.status == 200 and not page.ratings_failed,
    "denied": lambda page: page.status == 403,
    "allowed": lambda page: page.status == 200,
    "reviews vary": lambda page: page.reviews in ("v1", "v2"),  # not only v3 any more
}


def reviews_route(v1: int, v2: int, v3: int) -> str:
    return f"""apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  parentRefs: [{{name: reviews}}]
  rules:
    - name: split
      backendRefs:
        - {{name: reviews, subset: v1, weight: {v1}}}
        - {{name: reviews, subset: v2, weight: {v2}}}
        - {{name: reviews, subset: v3, weight: {v3}}}
      timeout: 3s
      retries: {{attempts: 2, perTryTimeout: 1s}}
"""


RATINGS_FAULT = """apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - name: half-fail
      backendRefs: [{name: ratings}]
      fault:
        abort: {httpStatus: 503, percentage: 50}
"""

DENY_PRODUCTPAGE = """apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: closed-for-inventory, namespace: bookinfo}
spec:
  selector:
    matchLabels: {app: productpage}
  action: DENY
  rules:
    - to:
        - operation: {paths: ["/productpage"]}
"""


def run_steps() -> None:
    console.rule("[bold]2. Traffic through the ingress gateway")
    console.print(f"GET {ENTRY}, as a browser would; reviews is split 40/30/30 by mesh.yaml")
    drive("as deployed")

    console.rule("[bold]3. Shift reviews: 90/10 between v1 and v2, then all to v3")
    apply(reviews_route(90, 10, 0))
    wait_until("v1 or v2 only")
    drive("90 % v1, 10 % v2")
    apply(reviews_route(0, 0, 100))
    wait_until("v3")
    drive("100 % v3")

    console.rule("[bold]4. Inject a fault: ratings answers 503 to half of its calls")
    apply(RATINGS_FAULT)
    wait_until("ratings failing")
    pages = [fetch() for _ in range(100)]
    failed = sum(p.ratings_failed for p in pages)
    table = Table("pages (v3 reviews)", "stars shown", "'ratings unavailable'", title="fault")
    table.add_row(str(len(pages)), str(len(pages) - failed), str(failed))
    console.print(table)
    console.print("the page still answers 200: reviews degrades gracefully")
    myc("delete", "httproute", "ratings", "-n", "bookinfo")
    wait_until("ratings healthy")

    console.rule("[bold]5. Deny the product page with an AuthorizationPolicy")
    apply(DENY_PRODUCTPAGE)
    wait_until("denied")
    page = fetch()
    table = Table("status", "x-mycelium-reason", "body", title="GET /productpage")
    table.add_row(str(page.status), page.reason, page.detail)
    console.print(table)
    myc("delete", "authorizationpolicy", "closed-for-inventory", "-n", "bookinfo")
    wait_until("allowed")
    console.print("policy removed: the page answers again")

    console.rule("[bold]6. Split reviews three ways, and leave it so")
    apply(reviews_route(*FINAL_SPLIT))
    wait_until("reviews vary")
    drive("v1 {} / v2 {} / v3 {}".format(*FINAL_SPLIT))
    console.print("each reload of the page may show another reviews version")


# What the demo leaves in force: a reload of the product page varies.
FINAL_SPLIT = (40, 30, 30)


def closing_lines() -> list[str]:
    """What to do next, each line within 80 columns (a terminal's width)."""
    home = HOME.relative_to(ROOT)
    myc_path = Path(MYC).relative_to(ROOT) if Path(MYC).is_relative_to(ROOT) else Path(MYC)
    return [
        f"bookinfo:  {ENTRY}  (reload it)",
        f"export MYC_HOME={home}",
        f"{myc_path} dashboard          # the dashboard, logged in",
        f"{myc_path} ps -n bookinfo     # the pods",
        f"{myc_path} stat -n bookinfo   # their traffic",
        "make demo-down              # stop it all",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--down", action="store_true", help="stop the demo mesh")
    args = parser.parse_args()
    if args.down:
        print(myc("down"), end="")
        return
    start_mesh()
    run_steps()
    console.rule("[bold green]The mesh keeps running")
    for line in closing_lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
