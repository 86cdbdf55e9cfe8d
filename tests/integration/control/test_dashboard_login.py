"""The dashboard's API against a real controller: refused without a login, opened by a
one-time link (as `myc dashboard` gets it), the link spent once used; the admin token
still works for scripts. The page itself carries no data and needs no login."""

from __future__ import annotations

import aiohttp
from tests.support.controller import Mesh

DATA = ("/dashboard/api/config", "/dashboard/api/graph", "/dashboard/api/services")


def browser_session() -> aiohttp.ClientSession:
    # A browser keeps cookies for 127.0.0.1; aiohttp's jar needs `unsafe` to do so.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_the_dashboard_api_refuses_a_browser_that_did_not_log_in(mesh: Mesh) -> None:
    async with aiohttp.ClientSession() as browser:
        for path in (*DATA, "/dashboard/api/tap?target=all"):
            async with browser.get(mesh.api.base + path) as response:
                assert response.status == 401, path
                problem = await response.json()
                assert problem["error"] == "login_required"
                assert "run `myc dashboard`" in problem["message"]
        async with browser.get(mesh.api.base + "/dashboard/") as page:
            assert page.status == 200  # the page holds no data: anyone may load it


async def test_a_one_time_link_logs_a_browser_in_once(mesh: Mesh) -> None:
    status, minted = await mesh.api.call("POST", "/api/v1/dashboard-logins", json={})
    assert status == 200
    link = mesh.api.base + minted["path"]
    assert minted["expiresInSeconds"] == 120

    async with browser_session() as browser:
        async with browser.get(link, allow_redirects=False) as login:
            assert login.status == 302
            assert login.headers["Location"] == "/dashboard/"
            cookie = login.cookies["myc_dashboard"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
            assert cookie["path"] == "/dashboard"
        for path in DATA:
            async with browser.get(mesh.api.base + path) as response:
                assert response.status == 200, path

    # The link is spent: a second browser that got hold of it is not let in.
    async with browser_session() as other:
        async with other.get(link, allow_redirects=False) as again:
            assert again.status == 401
            assert "spent, expired or unknown" in await again.text()
        async with other.get(mesh.api.base + "/dashboard/api/config") as response:
            assert response.status == 401


async def test_minting_a_link_needs_the_admin_token_and_scripts_may_use_it(mesh: Mesh) -> None:
    async with (
        aiohttp.ClientSession() as anyone,
        anyone.post(mesh.api.base + "/api/v1/dashboard-logins") as response,
    ):
        assert response.status == 401
    status, body = await mesh.api.call("GET", "/dashboard/api/config")
    assert status == 200
    assert "resources" in body
