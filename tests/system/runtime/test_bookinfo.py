"""Bookinfo under `myc up`, the whole story a user walks through, in both pod runtimes:
netns pods (root: a network namespace per pod) and process pods (the runtime a user
without root gets, chosen explicitly here with `--pods process`).

One mesh per runtime serves every step: the product page fetched with curl through the
ingress gateway on the host's loopback, a 90/10 shift held over 1,000 requests, a
fault injected on ratings, a denial answered 403 with its reason, a rolling restart of
reviews under steady load without one failed request, scaling up and down, and
`myc down` leaving no namespace, link or nftables rule behind. Each step sets the
routes it needs, so it does not lean on the step before.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from tests.support.bookinfo_mesh import (
    RUNTIMES,
    BookinfoMesh,
    SteadyLoad,
    bookinfo_for,
    reviews_route,
)
from tests.support.browser import ARTIFACTS, CHROMIUM, DOCS_IMAGES, FLAGS, missing_chromium
from tests.support.polling import wait_for

DEPLOYMENTS = {
    "ingress-gateway",
    "productpage-v1",
    "details-v1",
    "ratings-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
}
POD_NETWORKS = {"netns": "198.18.64.0/18", "process": "127.0.64.0/18"}
SPLIT_REQUESTS = 1000
SPLIT_TOLERANCE = 0.04  # the issue's ±4 points; 4.2 standard deviations at 10 %


def kernel_objects() -> dict[str, str]:
    """What `myc down` must leave as it found: namespaces, links and nftables rules."""
    return {
        "ip netns": _run("ip", "netns", "list"),
        "ip link": "\n".join(sorted(_run("ip", "-o", "link", "show").splitlines())),
        "nft list ruleset": _run("nft", "list", "ruleset"),
    }


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture(scope="module", params=RUNTIMES)
def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BookinfoMesh]:
    runtime: str = request.param
    mesh = bookinfo_for(runtime, tmp_path_factory.mktemp(f"bookinfo-{runtime}"))
    shell = mesh.shell
    mesh.before = kernel_objects() if runtime == "netns" else {}
    try:
        mesh.start()
        yield mesh
    finally:
        shell.down()


def pods_of(mesh: BookinfoMesh, deployment: str) -> list[list[str]]:
    return [row for row in mesh.shell.pods() if row[1].rsplit("-", 2)[0] == deployment]


def test_curl_fetches_the_product_page_through_the_ingress_gateway(mesh: BookinfoMesh) -> None:
    rows = mesh.shell.pods()
    assert {row[1].rsplit("-", 2)[0] for row in rows} == DEPLOYMENTS
    assert all(row[2] == "1/1" and row[3] == "running" for row in rows), rows
    network = ipaddress.ip_network(POD_NETWORKS[mesh.shell.pods_as])
    assert all(ipaddress.ip_address(row[5]) in network for row in rows), rows

    curl = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "10", mesh.url],
        capture_output=True,
        text=True,
        check=False,
    )

    assert curl.returncode == 0, curl.stderr
    assert curl.stdout.startswith("HTTP/1.1 200"), curl.stdout[:500]
    assert "<title>Bookinfo: The Comedy of Errors</title>" in curl.stdout
    assert "Reviews served by reviews" in curl.stdout


def test_a_90_10_shift_holds_over_a_thousand_requests(mesh: BookinfoMesh) -> None:
    mesh.apply(reviews_route(v1=90, v2=10, v3=0))
    # The config reaches the proxies in milliseconds; 40 pages in a row without v3
    # (which had 30 %) say it has (0.7 ** 40: never by chance).
    wait_for(
        lambda: all(p.reviews_version != "v3" for p in mesh.pages(40)), 30, "the shift in force"
    )

    seen = mesh.versions(SPLIT_REQUESTS)

    assert set(seen) <= {"v1", "v2"}, seen
    assert abs(seen["v2"] / SPLIT_REQUESTS - 0.10) <= SPLIT_TOLERANCE, seen
    assert abs(seen["v1"] / SPLIT_REQUESTS - 0.90) <= SPLIT_TOLERANCE, seen


def test_a_fault_injected_on_ratings_shows_on_the_page(mesh: BookinfoMesh) -> None:
    mesh.apply(reviews_route(v3=1))  # v3 shows ratings: red stars
    wait_for(lambda: mesh.page().reviews_version == "v3", 30, "reviews v3 only")
    assert "ratings unavailable" not in mesh.page().body

    mesh.apply(
        """apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: ratings, namespace: bookinfo}
spec:
  parentRefs: [{name: ratings}]
  rules:
    - backendRefs: [{name: ratings}]
      fault: {abort: {httpStatus: 503, percentage: 100}}
"""
    )
    wait_for(lambda: "ratings unavailable" in mesh.page().body, 30, "the fault seen")
    pages = mesh.pages(20)
    assert all(p.status == 200 and "ratings unavailable" in p.body for p in pages)

    deleted = mesh.shell.myc("delete", "httproute", "ratings", "-n", "bookinfo")
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: mesh.page().complete, 30, "ratings back")


def test_a_denial_is_answered_403_with_its_reason(mesh: BookinfoMesh) -> None:
    mesh.apply(
        """apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: closed-for-inventory, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: productpage}}
  action: DENY
  rules:
    - to: [{operation: {paths: ["/productpage"]}}]
"""
    )
    denied = wait_for(
        lambda: (page := mesh.page()).status == 403 and page, 30, "the denial in force"
    )

    assert denied.reason == "denied"
    assert "policy bookinfo/closed-for-inventory" in denied.body
    assert "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ingress" in denied.body

    deleted = mesh.shell.myc("delete", "authz", "closed-for-inventory", "-n", "bookinfo")
    assert deleted.returncode == 0, deleted.stderr
    wait_for(lambda: mesh.page().complete, 30, "the page back")


DENY_RATINGS = """apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-closed, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/ratings/*"]}}]}]
"""
EDGES_JS = "() => window.meshGraph ? window.meshGraph.edges().map((e) => e.data()) : []"


def short(node: str) -> str:
    """`workload:bookinfo/reviews-v2` -> `reviews-v2` (a workload is its Deployment, as
    in Istio's metrics, never a pod); `service:bookinfo/ratings` -> `ratings`."""
    return node.rsplit("/", maxsplit=1)[-1]


def test_the_dashboard_shows_bookinfo_live(mesh: BookinfoMesh) -> None:
    """Over the running mesh, in Debian's chromium: the graph has bookinfo's calls (the
    gateway calls productpage, which calls details and reviews, whose v2 and v3 call
    ratings), its numbers move under traffic, the tap view fills with the gateway's
    requests, and a denial at ratings turns reviews' edges to it red. The screenshot
    is the one in docs/ (refreshed when MYC_DOCS_SCREENSHOTS=1)."""
    problem = missing_chromium()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    mesh.apply(reviews_route(v1=1, v2=1, v3=1))
    mesh.pages(60)
    dashboard = mesh.shell.env["MYC_CONTROLLER"] + "/dashboard/"
    wanted = {
        ("ingress-gateway", "productpage"),
        ("productpage-v1", "details"),
        ("productpage-v1", "reviews"),
        ("reviews-v2", "ratings"),
        ("reviews-v3", "ratings"),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            # Logged in as a user is: `myc dashboard` prints a one-time link.
            login = mesh.shell.myc("dashboard", "--no-open")
            assert login.returncode == 0, login.stderr
            page.goto(login.stdout.strip().splitlines()[-1])
            page.goto(dashboard + "#graph")

            def edges() -> dict[tuple[str, str], dict[str, Any]]:
                return {
                    (short(e["source"]), short(e["target"])): e
                    for e in page.evaluate(EDGES_JS)
                    if e["source"].startswith("workload:")
                }

            mesh.pages(20)
            drawn = wait_for(lambda: wanted <= set(edges()) and edges(), 30, "bookinfo's graph")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"dashboard-bookinfo-{mesh.shell.pods_as}.png"))
            if os.environ.get("MYC_DOCS_SCREENSHOTS") == "1" and mesh.shell.pods_as == "netns":
                DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(DOCS_IMAGES / "dashboard-bookinfo.png"))

            # The numbers move under traffic.
            before = drawn[("ingress-gateway", "productpage")]["requests"]
            mesh.pages(30)
            wait_for(
                lambda: edges()[("ingress-gateway", "productpage")]["requests"] > before,
                30,
                "more requests on the gateway's edge",
            )

            # The tap view fills with what the gateway forwards.
            page.goto(dashboard + "#tap")
            page.fill('#tap-form input[name="target"]', "deploy/ingress-gateway")
            page.fill('#tap-form input[name="namespace"]', "bookinfo")
            page.click("#tap-start")
            rows = page.locator('#tapped tbody tr[data-path="/productpage"]')
            wait_for(lambda: mesh.pages(4) and rows.count() > 0, 30, "tapped requests")
            page.click("#tap-stop")

            # A denial at ratings is an error edge from the reviews that call it.
            mesh.apply(DENY_RATINGS)
            wait_for(
                lambda: any("ratings unavailable" in p.body for p in mesh.pages(10)),
                30,
                "ratings denying",
            )
            page.goto(dashboard + "#graph")
            mesh.pages(40)
            denied = wait_for(
                lambda: [
                    e
                    for (source, target), e in edges().items()
                    if target == "ratings" and e["successRate"] < 0.99
                ],
                30,
                "an error edge into ratings",
            )
            assert {short(e["source"]) for e in denied} <= {"reviews-v2", "reviews-v3"}
            page.screenshot(path=str(ARTIFACTS / f"dashboard-denial-{mesh.shell.pods_as}.png"))
        finally:
            browser.close()
            deleted = mesh.shell.myc("delete", "authz", "ratings-closed", "-n", "bookinfo")
            assert deleted.returncode in (0, 1), deleted.stderr


def test_a_rolling_restart_of_reviews_under_load_fails_no_request(mesh: BookinfoMesh) -> None:
    mesh.apply(reviews_route(v1=1))
    wait_for(lambda: all(p.reviews_version == "v1" for p in mesh.pages(20)), 30, "v1 only")
    [before] = pods_of(mesh, "reviews-v1")

    with SteadyLoad(mesh) as load:
        restarted = mesh.shell.myc("restart", "deploy/reviews-v1", "-n", "bookinfo")
        assert restarted.returncode == 0, restarted.stderr
        rows = mesh.shell.pods_when(
            lambda rows: (
                [
                    r
                    for r in rows
                    if r[1].startswith("reviews-v1-") and r[1] != before[1] and r[2] == "1/1"
                ]
                and not [r for r in rows if r[1] == before[1]]
            ),
            "the new reviews-v1 pod ready and the old one gone",
            timeout=60,
        )
        [after] = [r for r in rows if r[1].startswith("reviews-v1-")]
        # Keep the load on until the new pod has answered some of it.
        wait_for(
            lambda: any(p.reviews_pod == after[1] for p in load.pages[-20:]),
            30,
            "pages from the new pod",
        )

    failed = [p for p in load.pages if not p.complete]
    assert len(load.pages) >= 50, len(load.pages)
    assert not failed, f"{len(failed)} of {len(load.pages)} failed; first: {failed[0]}"


def test_reviews_scales_up_and_down(mesh: BookinfoMesh) -> None:
    mesh.apply(reviews_route(v1=1))
    scaled = mesh.shell.myc("scale", "deploy/reviews-v1", "--replicas", "3", "-n", "bookinfo")
    assert scaled.returncode == 0, scaled.stderr

    rows = mesh.shell.pods_when(
        lambda rows: (
            len([r for r in rows if r[1].startswith("reviews-v1-") and r[2] == "1/1"]) == 3
        ),
        "three reviews-v1 pods ready",
        timeout=60,
    )
    names = {r[1] for r in rows if r[1].startswith("reviews-v1-")}
    served: set[str] = set()
    wait_for(
        lambda: served.update(p.reviews_pod or "" for p in mesh.pages(20)) or served >= names,
        60,
        f"pages from each of {sorted(names)}",
    )

    scaled = mesh.shell.myc("scale", "deploy/reviews-v1", "--replicas", "1", "-n", "bookinfo")
    assert scaled.returncode == 0, scaled.stderr
    mesh.shell.pods_when(
        lambda rows: len([r for r in rows if r[1].startswith("reviews-v1-")]) == 1,
        "back to one reviews-v1 pod",
        timeout=60,
    )
    pages = mesh.pages(20)
    assert all(p.complete for p in pages)


def test_down_stops_everything_and_leaves_nothing_behind(mesh: BookinfoMesh) -> None:
    down = mesh.shell.down()

    assert down.returncode == 0, down.stderr
    assert mesh.page().status == 0  # nothing answers at the gateway's port
    assert mesh.shell.pods() == []
    if mesh.before:
        after = kernel_objects()
        for what, listing in mesh.before.items():
            assert after[what] == listing, f"`{what}` changed:\n{listing}\n---\n{after[what]}"
