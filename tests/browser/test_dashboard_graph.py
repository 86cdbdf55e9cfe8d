"""The dashboard's service graph and golden metrics in a real browser, over real
traffic through sidecars: the caller's workload, the services and the workloads that
answered appear as nodes; the edges' numbers move as traffic flows; a denial by a
serving sidecar's policy turns its edge into an error edge; the services view lists
each service with its figures and draws its chart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from tests.support.browser import log_in
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, running_proxy_mesh, start_ratings

DENY_RATINGS = """apiVersion: mycelium.io/v1
kind: AuthorizationPolicy
metadata: {name: closed}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/stars"]}}]}]
"""


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[ProxyMesh]:
    async with running_proxy_mesh(tmp_path) as mesh:
        yield mesh


async def graph(page: Page) -> dict[str, Any]:
    """The graph as the page's cytoscape holds it."""
    result: dict[str, Any] = await page.evaluate(
        """() => window.meshGraph ? {
             nodes: window.meshGraph.nodes().map((n) => n.id()),
             edges: window.meshGraph.edges().map((e) => e.data()),
           } : {nodes: [], edges: []}"""
    )
    return result


def edge(data: dict[str, Any], source: str, target: str) -> dict[str, Any] | None:
    return next((e for e in data["edges"] if e["source"] == source and e["target"] == target), None)


async def traffic(mesh: ProxyMesh, count: int, host: str = "reviews", path: str = "/") -> None:
    for _ in range(count):
        await mesh.get(path, host=host)


async def test_the_graph_follows_the_traffic_and_shows_a_denial_as_an_error_edge(
    browser: Browser, mesh: ProxyMesh, artifacts: Path
) -> None:
    app, ratings = await start_ratings(mesh)
    try:
        # The caller learns of ratings-0 only once its sidecar has registered and the
        # push came: until then a call is answered 503 by the caller's own sidecar, and
        # no edge to ratings-0 could be drawn.
        await eventually(lambda: _answers(mesh, "ratings", "/stars"), what="ratings-0 answering")
        await traffic(mesh, 20)
        await traffic(mesh, 5, host="ratings", path="/stars")
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await log_in(page, mesh.controller.api_port, mesh.controller.admin_token)
        await page.goto(f"http://127.0.0.1:{mesh.controller.api_port}/dashboard/#graph")

        caller, reviews = "workload:default/productpage-0", "service:default/reviews"
        to_ratings = ("workload:default/productpage-0", "service:default/ratings")
        # Both calls may land in different reports (every 5 s): wait for the whole graph.
        expected = {caller, reviews, "service:default/ratings", "workload:default/ratings-0"}
        first = await eventually(
            lambda: _with_edge(page, caller, reviews, expected, mesh),
            timeout=30,
            what="the caller's edge and every node",
        )
        before = edge(first, caller, reviews)
        assert before is not None
        assert before["successRate"] == 1
        assert "rps" in before["label"]

        await traffic(mesh, 40)  # the numbers move
        await eventually(
            lambda: _edge_changed(page, caller, reviews, before["rps"]),
            timeout=20,
            what="a new rate on the edge",
        )

        status, body = await mesh.api.apply(DENY_RATINGS)
        assert status == 200, body
        await eventually(lambda: _denied(mesh), timeout=20, what="ratings denying /stars")
        await traffic(mesh, 20, host="ratings", path="/stars")
        denied = await eventually(
            lambda: _error_edge(page, *to_ratings), timeout=20, what="an error edge"
        )
        assert denied["successRate"] < 0.99
        await page.screenshot(path=str(artifacts / "dashboard-graph.png"), full_page=True)

        await page.goto(f"http://127.0.0.1:{mesh.controller.api_port}/dashboard/#services")
        row = page.locator('tr[data-service="reviews.default"]')
        await expect(row).to_be_visible()
        await expect(page.locator('[data-chart="reviews.default"] canvas')).to_have_count(1)
        await page.screenshot(path=str(artifacts / "dashboard-services.png"), full_page=True)
    finally:
        await ratings.stop()
        await app.stop()


async def _with_edge(
    page: Page, source: str, target: str, nodes: set[str], mesh: ProxyMesh
) -> dict[str, Any]:
    data = await graph(page)
    if edge(data, source, target) and nodes <= set(data["nodes"]):
        return data
    # Not yet: say what the page and the controller hold, for the failure's message.
    discovery = mesh.controller.discovery
    known = sorted((k[0], k[3]) for k in discovery.traffic.edges(time.time(), 600))
    raise AssertionError(
        f"page nodes {sorted(data['nodes'])}, controller edges {known}, "
        f"telemetry reports {discovery.telemetry_reports}, "
        f"discovery refusals {dict(discovery.refusals.counts)}, "
        f"API refusals {dict(mesh.controller.api_refusals.counts)}"
    )


async def _edge_changed(page: Page, source: str, target: str, rps: float) -> bool:
    found = edge(await graph(page), source, target)
    return found is not None and found["rps"] != rps


async def _error_edge(page: Page, source: str, target: str) -> dict[str, Any] | None:
    found = edge(await graph(page), source, target)
    return found if found is not None and found["successRate"] < 0.99 else None


async def _answers(mesh: ProxyMesh, host: str, path: str) -> bool:
    response = await mesh.get(path, host=host)
    return response.status == 200


async def _denied(mesh: ProxyMesh) -> bool:
    response = await mesh.get("/stars", host="ratings")
    return response.status == 403
