"""What the bootstrap installs, as the README promises it: the demo gets what it needs
and no more (no browser, no etcd), the tests get the rest, and the README's two lists
say exactly that."""

from __future__ import annotations

import re
import shutil
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


def test_without_python_3_12_the_bootstrap_names_fixes_that_need_no_root(
    tmp_path: Path,
) -> None:
    # A Debian 12 machine as a user sees it: python3 is 3.11, no pyenv, no apt-get.
    checkout = tmp_path / "checkout"
    (checkout / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "bootstrap.sh", checkout / "tools")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "Python 3.11.2"; exit 0; fi\n'
        "exit 1  # sys.version_info < (3, 12)\n"
    )
    fake.chmod(0o755)
    for tool in ("dirname", "id", "cat", "basename", "grep", "sort"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)

    done = subprocess.run(
        ["/bin/bash", str(checkout / "tools" / "bootstrap.sh"), "demo"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 1
    assert f"this machine has: Python 3.11.2 at {fake}" in done.stderr
    assert "uv python install 3.12" in done.stderr
    assert "uv venv --seed --python 3.12 .venv" in done.stderr
    assert "pyenv install 3.12" in done.stderr
    assert "apt-get install python3.12" not in done.stderr  # Debian 12 has no such package
    assert not (checkout / ".venv").exists()
