"""Every bench runs to the end in CI, briefly: a bench that nothing runs rots.

Each command below is a bench with the smallest load that still goes through all of its
steps (its own peers started, its checks made, its summary written). compare_commits
runs against HEAD, which any clone has: what it proves is that the instrument works
(a worktree, a wheel of the other side, every bench on both sides), not a comparison.
The memory, mTLS-latency and controller-flood benches have their own smoke tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

SMOKE_RUNS = {
    "http1_parser": (["--iterations", "2000", "--rounds", "1"], 60),
    "proxy_path": (["--iterations", "2000", "--rounds", "1"], 60),
    "sidecar": (["--seconds", "1", "--rounds", "1"], 120),
    "sidecar_h2": (["--seconds", "1", "--rounds", "1"], 120),
    "controlplane": (
        ["--backend", "both", "--services", "20", "--proxies", "20", "--changes", "3"],
        120,
    ),
    "compare_commits": (["--smoke", "--base", "HEAD"], 300),
}


@pytest.mark.parametrize(
    "bench",
    [
        pytest.param(name, marks=pytest.mark.timeout(seconds + 30))
        for name, (_, seconds) in sorted(SMOKE_RUNS.items())
    ],
)
def test_the_bench_runs_to_its_summary(bench: str, tmp_path: Path) -> None:
    args, seconds = SMOKE_RUNS[bench]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{bench}.py"), *args],
        capture_output=True,
        text=True,
        timeout=seconds,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.strip(), "the bench printed no summary"
