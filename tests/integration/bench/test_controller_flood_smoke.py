"""`bench/controller_flood.py --smoke` runs to the end and reports every figure: CI's
guard that the benchmark still works against the controller as it is now."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# The smoke run takes about 5 s; a controller slow to start on a loaded CI box gets room.
SMOKE_TIMEOUT_SECONDS = 60


def results(stdout: str) -> list[dict[str, object]]:
    """The JSON the benchmark prints last (an array starting on a line of its own)."""
    start = stdout.rindex("\n[\n") + 1
    return json.loads(stdout[start:])


@pytest.mark.timeout(SMOKE_TIMEOUT_SECONDS + 10)
def test_smoke_run_reports_memory_flood_and_pushes() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "controller_flood.py"), "--smoke"],
        capture_output=True,
        text=True,
        env=env,
        timeout=SMOKE_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = results(done.stdout)
    assert run["connections"] == 20
    assert run["controller_code"] == str(ROOT / "src")
    rss = run["rss_mb"]
    assert isinstance(rss, dict)
    assert set(rss) >= {"rest", "peak", "after"}
    assert rss["peak"] >= rss["rest"] > 0
    flood = run["flood"]
    assert isinstance(flood, dict)
    for name in ("connected", "outcomes", "closed_by_server", "close_after_header_median_s"):
        assert name in flood
    assert flood["bytes_sent"] > 0
    push = run["push"]
    assert isinstance(push, dict)
    changes = push["during_flood"]["changes"] + push["after_flood"]["changes"]
    arrived = push["during_flood"]["arrived"] + push["after_flood"]["arrived"]
    assert changes == arrived == 1
    for when in ("during_flood", "after_flood"):
        assert set(push[when]) >= {"p50_ms", "max_ms", "within_1s"}
    assert isinstance(run["metrics_refusals"], list)
    assert isinstance(run["growth_per_connection_mb"], float | int)
