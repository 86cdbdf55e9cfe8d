"""Debian's chromium, as the browser tests launch it (Playwright drives it; no browser
is ever downloaded), and where their screenshots go."""

from __future__ import annotations

import os
from pathlib import Path

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
