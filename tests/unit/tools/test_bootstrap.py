"""What the bootstrap installs, as the README promises it: the demo gets what it needs
and no more (no browser, no etcd), the tests get the rest, and the README's two lists
say exactly that."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def bootstrap_lists() -> dict[str, list[str]]:
    out = subprocess.run(
        ["bash", str(ROOT / "tools" / "bootstrap.sh"), "--packages"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lists = {}
    for line in out.splitlines():
        purpose, _, packages = line.partition(": ")
        lists[purpose] = packages.split()
    return lists


def test_the_demo_installs_no_browser_and_no_etcd() -> None:
    lists = bootstrap_lists()
    assert "chromium" not in lists["demo"]
    assert not [pkg for pkg in lists["demo"] if pkg.startswith("etcd")]
    assert {"chromium", "etcd-server"} <= set(lists["test"])
    assert set(lists["demo"]) <= set(lists["test"])  # make test also runs the demo's parts


def test_the_readme_lists_exactly_what_each_command_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = dict(re.findall(r"^- `make (demo|test)`: ([a-z0-9 .+-]+)$", readme, re.MULTILINE))
    assert {purpose: packages.split() for purpose, packages in listed.items()} == (
        bootstrap_lists()
    )


def test_an_unknown_purpose_is_refused_with_the_accepted_ones() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "tools" / "bootstrap.sh"), "docs"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "demo|test" in done.stderr
