"""Browser tests: the dashboard in Debian's chromium, driven by Playwright (see
tests/support/browser.py). Without chromium the tests fail and say what to install;
they are not skipped. Screenshots go to `test-artifacts/` at the top of the checkout
(MYC_TEST_ARTIFACTS elsewhere).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright
from tests.support.browser import ARTIFACTS, CHROMIUM, FLAGS, missing_chromium


@pytest.fixture
def chromium() -> Path:
    problem = missing_chromium()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
