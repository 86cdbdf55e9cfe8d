"""Debian's chromium, as the browser tests launch it (Playwright drives it; no browser
is ever downloaded), and where their screenshots go."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# What a headless chromium needs on a closed machine: without the background-networking
# flags it keeps trying to reach its vendor's hosts.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("MYC_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
DOCS_IMAGES = Path(__file__).parents[2] / "docs" / "images"


def missing_chromium() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if CHROMIUM.exists():
        return None
    return (
        f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
        "(apt-get install chromium; tools/bootstrap.sh does it as root)"
    )


async def log_in(page: Page, api_port: int, admin_token: str) -> None:
    """Log `page` into the dashboard as a user does: `myc dashboard --no-open` prints a
    one-time link, and the browser opens it (its session cookie then opens the API)."""
    env = {
        **os.environ,
        "MYC_CONTROLLER": f"http://127.0.0.1:{api_port}",
        "MYC_TOKEN": admin_token,
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "myc"),
        "dashboard",
        "--no-open",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    link = out.decode().strip().splitlines()[-1]
    await page.goto(link)
    assert page.url.endswith("/dashboard/"), page.url
