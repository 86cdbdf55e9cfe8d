"""The processes behind `myc up` on this machine: a controller and the node agent.

Both run detached (their own sessions, output to `<home>/run/*.log`), each with a pid
file, so that `myc up` can return with the mesh running and `myc down` can stop it. A
controller that was already answering at the URL is used and left alone: `myc down`
stops only what `myc up` started. The agent's view of its pods is
`<home>/run/state/pods.json`; each pod's logs are under `<home>/run/state/pods/`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from mycelium import ports
from mycelium.errors import MeshError
from mycelium.runtime import netns_pods, process_records
from mycelium.runtime.pod_network import run_id

START_TIMEOUT_SECONDS = 30.0
# The agent stops every pod (apps get their grace period, sidecars drain) before exiting.
STOP_TIMEOUT_SECONDS = 60.0


class LocalMeshError(MeshError):
    """A process of the local mesh would not start or stop; the message says where to look."""


@dataclass(frozen=True, slots=True)
class LocalMesh:
    home: Path
    controller_url: str
    discovery: str = (
        f"127.0.0.1:{ports.DISCOVERY}"  # HOST:PORT the controller listens on for proxies
    )

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def state_dir(self) -> Path:
        return self.run_dir / "state"

    # --- the controller -----------------------------------------------------------------

    def controller_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.controller_url}/healthz", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start_controller(self, store: str | None = None) -> None:
        """A controller on the embedded store under the home, or on `store` (a URL)."""
        api = urlsplit(self.controller_url).netloc
        argv = [
            *_myc(),
            "controller",
            "--home",
            str(self.home),
            "--listen-api",
            api,
            "--listen-discovery",
            self.discovery,
        ]
        if store is not None:
            argv += ["--store", store]
        self._spawn("controller", argv)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.controller_answers():
            if not _alive(self._pid("controller")) or time.monotonic() > deadline:
                raise LocalMeshError(
                    f"the controller did not start; see {self.run_dir / 'controller.log'}"
                )
            time.sleep(0.1)

    # --- the node agent -----------------------------------------------------------------

    def agent_running(self) -> bool:
        return _alive(self._pid("agent"))

    def start_agent(self, manifest_dir: Path, pods: str = "process") -> None:
        # What a dead agent last wrote is not what the new one runs: `myc up` must
        # not take its pods for ready.
        (self.state_dir / "pods.json").unlink(missing_ok=True)
        settings = {
            "pods": pods,
            "run": run_id(str(self.home.resolve())),
            "controller_url": self.controller_url,
            "token_file": str(self.home / "admin-token"),
            "discovery": self.discovery,
            "trust_bundle": str(self.home / "ca" / "root.pem"),
            "state_dir": str(self.state_dir),
            "manifest_dir": str(manifest_dir.resolve()),
            "myc": _myc(),
        }
        argv = [sys.executable, "-m", "mycelium.runtime", msgspec.json.encode(settings).decode()]
        self._spawn("agent", argv)

    def pods(self) -> list[dict[str, Any]]:
        path = self.state_dir / "pods.json"
        try:
            pods: list[dict[str, Any]] = json.loads(path.read_text())["pods"]
        except (FileNotFoundError, ValueError, KeyError):
            return []
        return pods

    # --- stopping -------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop the agent (and with it every pod), then the controller if we started
        it; returns what was stopped. What an agent that died left (pods' processes,
        network namespaces) is removed too."""
        stopped = []
        for name in ("agent", "controller"):
            pid = self._pid(name)
            if _alive(pid):
                assert pid is not None
                _terminate(pid, STOP_TIMEOUT_SECONDS)
                stopped.append(name)
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if process_records.stop_orphans(self.state_dir / "pods"):
            stopped.append("pods a dead agent left")
        if os.geteuid() == 0 and netns_pods.sweep_leftovers(run_id(str(self.home.resolve()))):
            stopped.append("its network namespaces")
        return stopped

    # --- helpers --------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = {k: v for k, v in os.environ.items() if k != "MYC_TOKEN"}
        with open(self.run_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        (self.run_dir / f"{name}.pid").write_text(f"{process.pid}\n")

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.run_dir / f"{name}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def _myc() -> list[str]:
    return [str(Path(sys.executable).parent / "myc")]


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive: our own child that exited (reaped here), or another's
    # that its new parent has not reaped yet (an agent killed with SIGKILL).
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: trust the signal check
    return state not in ("Z", "X")


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            return
        time.sleep(0.1)
