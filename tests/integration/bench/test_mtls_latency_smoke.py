"""`bench/mtls_latency.py --smoke` runs to the end, mTLS checks included: CI's guard that
the benchmark still starts its four sidecars and measures all three paths.

It rotted once unseen: the proxy gained a metrics listener with a fixed default port
(15020), the bench passed no `--metrics`, and from then on three of its four sidecars
exited at start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support import host_packages

ROOT = Path(__file__).resolve().parents[3]
# The smoke run takes 10-15 s (a controller, four sidecars, 6 s of wrk); a loaded CI box
# gets room, and a first run that installs nginx and wrk too.
SMOKE_TIMEOUT_SECONDS = 180
TOOLS = ("nginx", "wrk")


@pytest.mark.timeout(SMOKE_TIMEOUT_SECONDS + 10)
def test_smoke_run_measures_every_path_over_real_mtls(tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if not host_packages.installed(tool)]
    assert not missing, (
        f"{', '.join(missing)} not installed: `make bootstrap` (as root) installs them"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    summary_file = tmp_path / "summary.json"
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "mtls_latency.py")),
            *("--smoke", "--json", str(summary_file)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=SMOKE_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(summary_file.read_text())
    for path in ("direct", "plain", "mtls"):
        assert summary[path]["rps"] > 0
        assert summary[path]["p99_ms"] >= summary[path]["p50_ms"] > 0
    for path in ("plain", "mtls"):
        assert set(summary[path]) >= {"added_p50_ms", "added_p99_ms", "cpu_us_per_request"}
    evidence = summary["mtls_evidence"]
    assert evidence["server_mtls_connections"] >= 1
    assert evidence["server_refused_plaintext"] >= 1
    assert set(evidence["identities"]) == {"mtls-client", "mtls-server"}
    assert summary["target"]["verdict"] in ("PASS", "MISS")
