"""`myc up` from a shell's point of view: one command brings up a controller, the node
agent and the manifest's pods (process pods here, no root needed); `myc ps` and
`myc logs` show them, `myc exec` runs a command as one of a pod's processes (a pod named,
or one of a Deployment's, with -n as kubectl takes it); `myc scale` and `myc restart`
change them; `myc down` leaves nothing running, and `myc ps` then says so."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.hello_pods import hello_manifest
from tests.support.myc_shell import MycShell

PORT = 8080


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[MycShell]:
    shell = MycShell(tmp_path)
    try:
        yield shell
    finally:
        shell.down()


def answers(address: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}:{PORT}/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_myc_up_runs_the_manifest_and_myc_down_stops_it_all(
    shell: MycShell, tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(hello_manifest(port=PORT, events=tmp_path / "events", replicas=2))

    up = shell.up(manifest)

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
    # As kubectl does: one of the Deployment's pods, and the namespace said with -n.
    by_deployment = shell.myc("logs", "-n", "default", "deploy/hello", "--sidecar")
    assert by_deployment.returncode == 0, by_deployment.stderr
    assert "ready" in by_deployment.stdout
    elsewhere = shell.myc("logs", "-n", "shop", "deploy/hello")
    assert elsewhere.returncode == 1
    assert "no pod of deployment 'hello' runs in namespace shop" in elsewhere.stderr
    assert shell.myc("ps", "-n", "shop").stdout.strip() == (
        "no pods in namespace shop (2 in other namespaces: myc ps -A)"
    )

    # A command in a pod calls the service by name, through that pod's sidecar.
    fetch = "import urllib.request; print(urllib.request.urlopen('http://hello:8080/').read())"
    inside = shell.myc("exec", rows[0][1], "--", sys.executable, "-c", fetch)
    assert inside.returncode == 0, inside.stderr
    assert "hello from hello-" in inside.stdout
    inside = shell.myc("exec", "deploy/hello", "--", sys.executable, "-c", fetch)
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

    down = shell.down()

    assert down.returncode == 0
    assert down.stdout.strip() == "stopped: agent, controller"
    # With no mesh running in this home, ps says so and fails, as a script needs it to.
    ps = shell.myc("ps")
    assert ps.returncode == 1
    assert "no mesh runs with home" in ps.stderr
    assert "myc up -f FILE" in ps.stderr
    assert not any(answers(address) for address in addresses)
    assert not list((tmp_path / "home" / "run").glob("*.pid"))
