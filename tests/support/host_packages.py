"""Debian packages a bench installs when they are missing (as root): through
`tools/install-packages.sh`, which starts and enables none of the services they ship
(nginx and haproxy would otherwise serve on the host at every boot) and keeps apt's
output in `.bootstrap/apt.log`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "tools" / "install-packages.sh"
LOG = ROOT / ".bootstrap" / "apt.log"


# Where Debian puts daemons (nginx, haproxy): on root's PATH, not on a user's.
SYSTEM_BIN = "/usr/sbin:/sbin"


def tool(name: str) -> str:
    """The path of the command `name`: on PATH, or among the system's daemons (a
    non-root user runs the benches' peers too)."""
    found = shutil.which(name) or shutil.which(name, path=SYSTEM_BIN)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed: `make bootstrap` (as root) installs it")
    return found


def installed(name: str) -> bool:
    return (shutil.which(name) or shutil.which(name, path=SYSTEM_BIN)) is not None


def ensure_tools(packages: dict[str, str]) -> None:
    """Install the package of every tool (command name → Debian package) not found."""
    missing = sorted({pkg for name, pkg in packages.items() if not installed(name)})
    if missing:
        subprocess.run(["bash", str(INSTALLER), str(LOG), *missing], check=True)
