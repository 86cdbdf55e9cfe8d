"""`myc up` from a shell's point of view: one command brings up a controller, the node
agent and the manifest's pods (process pods here, no root needed); `myc ps` and
`myc logs` show them, `myc exec` runs a command as one of a pod's processes; `myc scale`
and `myc restart` change them; `myc down` leaves nothing running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.integration.cli.conftest import MYC, free_port

APP = Path(__file__).parents[2] / "support" / "pod_app.py"
PORT = 8080
MANIFEST = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: hello}}
spec:
  selector: {{app: hello}}
  ports: [{{name: http, port: {port}}}]
---
apiVersion: mycelium.io/v1
kind: Deployment
metadata: {{name: hello}}
spec:
  replicas: 2
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      serviceAccountName: hello
      containers:
        - name: hello
          command: [{python}, {app}, serve]
          env:
            - {{name: PORT, value: "{port}"}}
            - {{name: EVENT_FILE, value: "{events}"}}
          ports: [{{containerPort: {port}}}]
          readinessProbe: {{httpGet: {{path: /, port: {port}}}}}
"""


class Shell:
    def __init__(self, tmp_path: Path) -> None:
        self.discovery = f"127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
        self.env.update(
            MYC_HOME=str(tmp_path / "home"),
            MYC_CONTROLLER=f"http://127.0.0.1:{free_port()}",
            COLUMNS="200",
        )

    def pods_when(self, condition: Callable[[list[list[str]]], bool], what: str) -> list[list[str]]:
        """`myc ps` rows, polled until `condition` holds (30 s at most)."""
        deadline = time.monotonic() + 30
        while True:
            listing = self.myc("ps").stdout.splitlines()[1:]
            rows = [line.split() for line in listing if line.strip()]
            if condition(rows):
                return rows
            assert time.monotonic() < deadline, f"{what}: not within 30 s; last: {rows}"
            time.sleep(0.2)

    def myc(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MYC, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    shell = Shell(tmp_path)
    try:
        yield shell
    finally:
        shell.myc("down", "--listen-discovery", shell.discovery)


def answers(address: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}:{PORT}/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_myc_up_runs_the_manifest_and_myc_down_stops_it_all(shell: Shell, tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        MANIFEST.format(port=PORT, python=sys.executable, app=APP, events=tmp_path / "events")
    )

    up = shell.myc("up", "-f", str(manifest), "--listen-discovery", shell.discovery)

    assert up.returncode == 0, up.stdout + up.stderr
    assert "deployment.mycelium.io/hello created" in up.stdout
    assert "pods ready: 2/2" in up.stdout
    ps = shell.myc("ps")
    rows = [line.split() for line in ps.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 2
    assert all(row[2] == "1/1" and row[3] == "running" for row in rows), ps.stdout
    addresses = [row[5] for row in rows]
    assert all(answers(address) for address in addresses)  # through each pod's sidecar
    logs = shell.myc("logs", rows[0][1], "--sidecar")
    assert logs.returncode == 0
    assert "ready" in logs.stdout

    # A command in a pod calls the service by name, through that pod's sidecar.
    fetch = "import urllib.request; print(urllib.request.urlopen('http://hello:8080/').read())"
    inside = shell.myc("exec", rows[0][1], "--", sys.executable, "-c", fetch)
    assert inside.returncode == 0, inside.stderr
    assert "hello from hello-" in inside.stdout

    scaled = shell.myc("scale", "deploy/hello", "--replicas", "1")
    assert scaled.stdout.strip() == "deployment.mycelium.io/hello configured"
    [kept] = shell.pods_when(lambda pods: len(pods) == 1, "one pod after scaling")
    assert kept[1] == rows[0][1]  # the highest number went

    assert shell.myc("restart", "deploy/hello").returncode == 0
    [new] = shell.pods_when(
        lambda pods: len(pods) == 1 and pods[0][1] != kept[1] and pods[0][2] == "1/1",
        "a new pod after the restart",
    )
    addresses = [kept[5], new[5]]

    down = shell.myc("down", "--listen-discovery", shell.discovery)

    assert down.returncode == 0
    assert down.stdout.strip() == "stopped: agent, controller"
    assert shell.myc("ps").stdout.strip() == "no pods"
    assert not any(answers(address) for address in addresses)
    assert not list((tmp_path / "home" / "run").glob("*.pid"))
