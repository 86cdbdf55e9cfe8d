"""A node agent killed with SIGKILL leaves its pods behind: their processes (each in a
session of its own) and, for netns pods, their namespaces. The next `myc up` of the same
home stops those processes and sweeps those namespaces before it starts the pods again,
and `myc down` then leaves nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from tests.support.hello_pods import hello_manifest
from tests.support.myc_shell import MycShell
from tests.support.polling import wait_for

from mycelium.runtime.netns_pods import namespace_names
from mycelium.runtime.pod_network import run_id, run_prefix


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()


def recorded_pids(shell: MycShell) -> list[int]:
    pods = shell.home / "run" / "state" / "pods"
    return [int(p.read_text().split()[0]) for p in pods.glob("**/*.pid")]


@pytest.mark.parametrize("runtime", [pytest.param("netns", marks=pytest.mark.system), "process"])
def test_the_next_up_clears_what_a_killed_agent_left(runtime: str, tmp_path: Path) -> None:
    shell = MycShell(tmp_path, pods=runtime)
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(hello_manifest(port=8080, events=tmp_path / "events"))
    prefix = run_prefix(run_id(str(shell.home.resolve())))
    try:
        assert shell.up(manifest).returncode == 0
        left = recorded_pids(shell)
        assert len(left) == 2  # the pod's sidecar and app
        agent = int((shell.home / "run" / "agent.pid").read_text())

        os.kill(agent, signal.SIGKILL)
        wait_for(lambda: not alive(agent), 10, "the agent gone")
        assert all(alive(pid) for pid in left)  # the pod outlived its agent

        again = shell.up(manifest)

        assert again.returncode == 0, again.stdout + again.stderr
        assert not any(alive(pid) for pid in left)
        assert len(recorded_pids(shell)) == 2  # the new pod's, only
        if runtime == "netns":
            ours = [n for n in namespace_names() if n.startswith(prefix)]
            assert len(ours) == 2, ours  # the node's and the one new pod's

        # Killed again, and this time `myc down` clears up after it.
        survivors = recorded_pids(shell)
        os.kill(int((shell.home / "run" / "agent.pid").read_text()), signal.SIGKILL)
        down = shell.down()
        assert down.returncode == 0, down.stderr
        assert "pods a dead agent left" in down.stdout
        assert not any(alive(pid) for pid in survivors)
    finally:
        shell.down()
    if runtime == "netns":
        assert not [n for n in namespace_names() if n.startswith(prefix)]
