"""Bookinfo under `myc up`: examples/bookinfo/mesh.yaml as a shell runs it. Six process
pods (productpage, details, ratings and three versions of reviews) come up ready; the
product page, fetched at productpage's pod address (its sidecar), is put together from
details and reviews called by service name through the mesh; the versions of reviews
that answer follow the manifest's HTTPRoute; `myc down` leaves nothing answering."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.myc_shell import MycShell

from mycelium.api.loading import load_file
from mycelium.api.routing import HTTPRoute

MANIFEST = Path(__file__).parents[3] / "examples" / "bookinfo" / "mesh.yaml"
PORT = 9080
DEPLOYMENTS = {
    "productpage-v1",
    "details-v1",
    "ratings-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
}
TITLE = "The Comedy of Errors"
REQUESTS = 30
# A version taking at least this share of the route is seen in REQUESTS requests
# (missing one with 20 % has a probability of 0.8 ** 30, about 0.1 %).
SURELY_SEEN_SHARE = 0.2
STAR_COLORS = {"v1": None, "v2": "black", "v3": "red"}
VERSION_ON_PAGE = re.compile(r'data-reviews-version="([^"]*)"')


def wait_for[T](check: Callable[[], T | None], timeout: float, what: str) -> T:
    """`check()` polled until it is truthy; its value, or a failure at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s; last: {result!r}"
        time.sleep(0.1)


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[MycShell]:
    shell = MycShell(tmp_path)
    try:
        yield shell
    finally:
        shell.down()


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET straight to the address (no proxy), 0 when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


def answers(address: str) -> bool:
    try:
        with socket.create_connection((address, PORT), timeout=2):
            return True
    except OSError:
        return False


def route_shares() -> dict[str, float]:
    """reviews' versions and their shares of the traffic, as the manifest's route says."""
    [route] = [
        r for r in load_file(MANIFEST) if isinstance(r, HTTPRoute) and r.metadata.name == "reviews"
    ]
    weights = Counter[str]()
    for backend in route.spec.rules[0].backend_refs:
        weights[backend.subset or "any"] += backend.weight
    total = sum(weights.values())
    return {version: weight / total for version, weight in weights.items() if weight}


def complete_page(status: int, page: str) -> bool:
    """A 200 page with the book's details and its reviews, no dependency failing."""
    return (
        status == 200
        and 'class="error"' not in page
        and "William Shakespeare" in page
        and VERSION_ON_PAGE.search(page) is not None
    )


def test_bookinfo_runs_as_process_pods_and_follows_the_route(shell: MycShell) -> None:
    up = shell.up(MANIFEST)

    assert up.returncode == 0, up.stdout + up.stderr
    assert "pods ready: 6/6" in up.stdout, up.stdout
    rows = shell.pods()
    assert len(rows) == 6, rows
    assert all(row[0] == "bookinfo" and row[2] == "1/1" and row[3] == "running" for row in rows)
    assert {row[1].rsplit("-", 2)[0] for row in rows} == DEPLOYMENTS
    [productpage] = [row for row in rows if row[1].startswith("productpage-v1-")]
    url = f"http://{productpage[5]}:{PORT}/productpage"

    def complete() -> tuple[int, str] | None:
        answer = get(url)
        return answer if complete_page(*answer) else None

    # Ready pods; the sidecars may still be learning each other's endpoints.
    try:
        status, page = wait_for(complete, 20, f"a complete product page at {url}")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{get(url)}\n{shell.pod_log('bookinfo', productpage[1])}"
        ) from None
    assert f"<title>Bookinfo: {TITLE}</title>" in page
    for text in ("Book Details", "Book Reviews", "Reviewer1", "Reviewer2"):
        assert text in page, f"{text!r} not on the page:\n{page}"

    shares = route_shares()
    seen: Counter[str] = Counter()
    for _ in range(REQUESTS):
        status, page = get(url)
        assert status == 200, (status, page)
        assert TITLE in page, page
        assert 'class="error"' not in page, page
        [version] = VERSION_ON_PAGE.findall(page)
        seen[version] += 1
        color = STAR_COLORS[version]
        if color is None:
            assert 'class="stars"' not in page, f"{version} shows ratings: {page}"
        else:
            assert page.count(f'class="stars" style="color: {color}"') == 2, page
    assert set(seen) <= set(shares), f"versions {dict(seen)}, route {shares}"
    surely = {version for version, share in shares.items() if share >= SURELY_SEEN_SHARE}
    assert surely <= set(seen), f"versions {dict(seen)} in {REQUESTS} requests, route {shares}"

    addresses = [row[5] for row in rows]
    down = shell.down()

    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.strip() == "stopped: agent, controller"
    assert shell.myc("ps").stdout.strip() == "no pods"
    assert not [address for address in addresses if answers(address)]
    assert not list((shell.home / "run").glob("*.pid"))
