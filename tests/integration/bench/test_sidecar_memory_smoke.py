"""`bench/sidecar_memory.py --smoke` runs to the end: CI's guard that the memory bench
still starts a real proxy and that the sidecar loads none of the CLI's or controller's
libraries (the bench exits non-zero when it does)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_smoke_run_reads_every_import_and_an_idle_proxy(tmp_path: Path) -> None:
    figures = tmp_path / "memory.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "sidecar_memory.py"),
            "--smoke",
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(figures.read_text())
    names = [name for name, _ in found["imports"]]
    assert names[0] == "(interpreter)"
    assert names[-1] == "mycelium.proxy.__main__"
    sizes = [rss for _, rss in found["imports"]]
    assert sizes == sorted(sizes), sizes  # cumulated: it only grows
    assert found["loaded"] == []
    # a real process was read: more than the bare interpreter, less than a runaway
    assert sizes[0] < found["idle_rss_mb"] < 200
    assert "a proxy at rest" in done.stdout
