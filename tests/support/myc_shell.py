"""`myc` as a shell runs it, against a mesh of its own: a home and free ports per test.

For the tests of `myc up` and friends: each invocation is a separate process with the
environment a user would set (MYC_HOME, MYC_CONTROLLER), and `pods_when` polls
`myc ps` for a condition with a deadline. Whoever makes a shell runs `myc down` at
the end (`down()`), even when the test failed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MYC = [str(Path(sys.executable).parent / "myc")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MycShell:
    def __init__(self, tmp_path: Path, pods: str = "process") -> None:
        self.pods_as = pods  # process pods unless a (system) test asks for netns
        self.home = tmp_path / "home"
        self.discovery = f"127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
        self.env.update(
            MYC_HOME=str(self.home),
            MYC_CONTROLLER=f"http://127.0.0.1:{free_port()}",
            COLUMNS="200",
        )

    def myc(
        self, *args: str, timeout: float = 180, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MYC, *args],
            input=input_text,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def up(self, manifest: Path) -> subprocess.CompletedProcess[str]:
        return self.myc(
            "up", "-f", str(manifest), "--listen-discovery", self.discovery, "--pods", self.pods_as
        )

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.myc("down", "--listen-discovery", self.discovery)

    def pods(self) -> list[list[str]]:
        """`myc ps` rows: namespace, pod, ready, phase, restarts, address[, reason]."""
        listing = self.myc("ps", "-A").stdout.splitlines()[1:]
        return [line.split() for line in listing if line.strip()]

    def pods_when(
        self, condition: Callable[[list[list[str]]], bool], what: str, timeout: float = 30
    ) -> list[list[str]]:
        """`myc ps` rows, polled until `condition` holds."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.pods()
            if condition(rows):
                return rows
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s; last: {rows}"
            time.sleep(0.2)

    def pod_log(self, namespace: str, pod: str) -> str:
        """A pod's app and sidecar logs, for failure messages."""
        directory = self.home / "run" / "state" / "pods" / namespace / pod
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(directory.glob("*.log"))
        )
