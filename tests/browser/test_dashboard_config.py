"""The dashboard's config view in a real browser: every resource with its revision,
the proxies that depend on it and whether they acknowledged it; a change shows up as a
new revision, acknowledged again once the proxy took it; a click shows the YAML."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from tests.support.browser import log_in
from tests.support.proxy_mesh import ProxyMesh, running_proxy_mesh

UNUSED = """apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ratings, namespace: other}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
"""
SHIFT = """apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{name: reviews}]
  rules:
    - backendRefs:
        - {name: reviews, subset: v1, weight: 90}
        - {name: reviews, subset: v2, weight: 10}
"""


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[ProxyMesh]:
    async with running_proxy_mesh(tmp_path) as mesh:
        assert (await mesh.get("/")).status == 200  # the caller now depends on reviews
        yield mesh


async def open_dashboard(browser: Browser, mesh: ProxyMesh) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await log_in(page, mesh.controller.api_port, mesh.controller.admin_token)
    await page.goto(f"http://127.0.0.1:{mesh.controller.api_port}/dashboard/#config")
    return page


async def test_the_config_view_shows_who_acknowledged_each_resource(
    browser: Browser, mesh: ProxyMesh, artifacts: Path
) -> None:
    page = await open_dashboard(browser, mesh)
    service = page.locator('tr[data-resource="Service/default/reviews"]')
    await expect(service).to_be_visible()
    await expect(service.locator('[data-proxy="productpage-0"]')).to_have_attribute(
        "data-state", "acked"
    )

    status, body = await mesh.api.apply(UNUSED + "---\n" + SHIFT)
    assert status == 200, body
    ratings = page.locator('tr[data-resource="Service/other/ratings"]')
    await expect(ratings).to_be_visible()
    await expect(ratings.locator("[data-proxy]")).to_have_count(0)  # nothing here calls it

    route = page.locator('tr[data-resource="HTTPRoute/default/reviews"]')
    await expect(route).to_be_visible()  # a new resource, at a new revision...
    await expect(route.locator('[data-proxy="productpage-0"]')).to_have_attribute(
        "data-state",
        "acked",  # ...that the caller took
    )
    await route.click()
    await expect(page.locator("#yaml")).to_contain_text("weight: 90")
    await page.screenshot(path=str(artifacts / "dashboard-config.png"), full_page=True)
