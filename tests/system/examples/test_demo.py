"""`make demo`, as a newcomer runs it: the whole walk-through on a real mesh, as root
(a network namespace per pod), then what it leaves behind.

The demo must end somewhere worth looking at: reviews split across its versions, so
that reloading the product page shows more than one, and closing lines that fit an
80-column terminal and name the bookinfo namespace its pods run in. `demo.py --down`
then leaves nothing running. The demo binds its fixed ports (8080, 15012, 15014) on
127.0.0.1: the test fails, saying so, when another mesh holds them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "examples" / "demo.py"
PAGE = "http://127.0.0.1:8080/productpage"
VERSION = re.compile(r"reviews-(v[123])")
DEMO_PORTS = (8080, 15012, 15014)


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def reviews_version() -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(PAGE, timeout=10) as reply:
        match = VERSION.search(reply.read().decode(errors="replace"))
    return match.group(1) if match else "-"


def test_the_demo_runs_and_leaves_reviews_split_with_next_steps_in_80_columns() -> None:
    if os.geteuid() != 0:
        pytest.fail("the demo's test runs it as root, with a network namespace per pod")
    taken = [port for port in DEMO_PORTS if port_taken(port)]
    assert not taken, f"ports {taken} are in use (a demo running?): `make demo-down` first"
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    try:
        done = subprocess.run(
            [sys.executable, str(DEMO)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

        closing = done.stdout.rstrip("\n").splitlines()[-6:]
        assert closing[0].startswith(f"bookinfo:  {PAGE}")
        assert all(len(line) <= 80 for line in closing), closing
        assert any("ps -n bookinfo" in line for line in closing), closing
        assert closing[-1].startswith("make demo-down")

        seen = {reviews_version() for _ in range(40)}
        assert len(seen - {"-"}) >= 2, f"every reload showed the same reviews: {seen}"
    finally:
        subprocess.run(
            [sys.executable, str(DEMO), "--down"], cwd=ROOT, capture_output=True, timeout=180,
            check=False,
        )  # fmt: skip
    assert not [port for port in DEMO_PORTS if port_taken(port)], "the demo left a port bound"
