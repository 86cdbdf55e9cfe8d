"""Records of the processes pods run, so that a crashed agent's pods can be stopped.

Each pod's process (sidecar or app) runs in its own session, so it survives its agent:
an agent killed with SIGKILL leaves its pods' processes running, holding their
addresses and ports. Every process started gets a record, `<which>.pid` in its pod's
directory, holding its pid and its start time (field 22 of /proc/<pid>/stat), removed
when it exits. At start the next agent stops (SIGKILL, the whole session) every process
whose record is left and which is still the same process: the start time tells a
recorded process from an unrelated one that got the pid later.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

RECORD_SUFFIX = ".pid"


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    return stat.rsplit(")", 1)[1].split()[19]


def record(directory: Path, name: str, pid: int) -> None:
    ticks = _start_ticks(pid)
    if ticks is not None:
        (directory / f"{name}{RECORD_SUFFIX}").write_text(f"{pid} {ticks}\n")


def forget(directory: Path, name: str) -> None:
    (directory / f"{name}{RECORD_SUFFIX}").unlink(missing_ok=True)


def stop_orphans(root: Path) -> list[int]:
    """Kill the sessions of recorded processes under `root` that still run; remove every
    record. Returns the pids killed."""
    killed = []
    for path in sorted(root.glob(f"**/*{RECORD_SUFFIX}")):
        try:
            pid_text, ticks = path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, ticks = 0, ""
        if pid > 0 and _start_ticks(pid) == ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        path.unlink(missing_ok=True)
    return killed
