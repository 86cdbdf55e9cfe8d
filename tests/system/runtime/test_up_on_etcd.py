"""`myc up --store etcd://...`: the controller `myc up` starts keeps the manifest in a
real etcd (Debian's etcd-server) instead of the embedded store, and the pods run as
usual; what etcd holds is read back with etcdctl, as an operator would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.etcd import EtcdCluster, running_etcd
from tests.support.hello_pods import hello_manifest
from tests.support.myc_shell import MycShell

pytestmark = pytest.mark.system


@pytest.fixture
def etcd() -> Iterator[EtcdCluster]:
    with running_etcd(1) as cluster:
        yield cluster


def test_myc_up_keeps_the_mesh_in_etcd_when_told(etcd: EtcdCluster, tmp_path: Path) -> None:
    shell = MycShell(tmp_path, pods="process")
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(hello_manifest(port=8080, events=tmp_path / "events"))
    try:
        up = shell.myc(
            "up", "-f", str(manifest), "--listen-discovery", shell.discovery,
            "--pods", "process", "--store", etcd.url,
        )  # fmt: skip

        assert up.returncode == 0, up.stdout + up.stderr
        assert "pods ready: 1/1" in up.stdout
        stored = subprocess.run(
            ["etcdctl", "--endpoints", ",".join(etcd.endpoints), "get", "--keys-only",
             "--prefix", "/mycelium/deployment/"],
            capture_output=True, text=True, check=True, timeout=30,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        ).stdout  # fmt: skip
        assert "/mycelium/deployment/default/hello" in stored
        assert not (shell.home / "store.db").exists()  # no embedded store was made
    finally:
        shell.down()
