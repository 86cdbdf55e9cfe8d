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


def ensure_tools(packages: dict[str, str]) -> None:
    """Install the package of every tool (command name → Debian package) not on PATH."""
    missing = sorted({pkg for tool, pkg in packages.items() if shutil.which(tool) is None})
    if missing:
        subprocess.run(["bash", str(INSTALLER), str(LOG), *missing], check=True)
