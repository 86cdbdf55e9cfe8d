"""The dashboard's live tap view in a real browser: started on every proxy, it fills
with the requests sent through the caller sidecar, each with its path and status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect
from tests.support.browser import log_in
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, running_proxy_mesh


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[ProxyMesh]:
    async with running_proxy_mesh(tmp_path) as mesh:
        yield mesh


async def test_the_tap_view_fills_with_live_requests(
    browser: Browser, mesh: ProxyMesh, artifacts: Path
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await log_in(page, mesh.controller.api_port, mesh.controller.admin_token)
    await page.goto(f"http://127.0.0.1:{mesh.controller.api_port}/dashboard/#tap")
    await page.fill('#tap-form input[name="path"]', "/tapped")
    await page.click("#tap-start")
    await expect(page.locator("#status")).to_contain_text("tapping all", timeout=10_000)

    async def tapped_rows() -> int:
        await mesh.get("/tapped/1")
        await mesh.get("/elsewhere")  # filtered out by the path prefix
        return await page.locator("#tapped tbody tr").count()

    await eventually(tapped_rows, timeout=15, what="tapped requests in the page")
    rows = page.locator("#tapped tbody tr")
    await expect(rows.first).to_have_attribute("data-path", "/tapped/1")
    await expect(rows.first).to_have_attribute("data-status", "200")
    await expect(page.locator('#tapped tbody tr[data-path="/elsewhere"]')).to_have_count(0)
    await page.screenshot(path=str(artifacts / "dashboard-tap.png"), full_page=True)
    await page.click("#tap-stop")
