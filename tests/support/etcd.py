"""Start real etcd members (Debian's `etcd-server`) on loopback for tests.

`EtcdCluster.start(size)` launches `size` members of /usr/bin/etcd on free 127.0.0.1
ports, each with its own data directory under one temporary folder, and returns once
every member reports healthy (or raises with the members' log tails). `kill(index)`
SIGKILLs one member to simulate a crash, `pause(index)` freezes one as a hang would,
`stop()` ends every member and deletes the data. The timings are tuned for loopback so
that a leader election takes well under a second: a dead leader is replaced before a
client's request deadline expires.

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ETCD_BINARY = Path("/usr/bin/etcd")

# Loopback round trips are ~0.1 ms, so a 50 ms heartbeat and a 500 ms election timeout
# are generous, and a lost leader is replaced in about a second. etcd derives its
# minimum lease TTL from these, (3/2 * election ticks) * heartbeat = 750 ms, rounded up
# to 1 s, so tests can use 1-second leases.
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500

# The tests write kilobytes; a small quota keeps a runaway test from filling the disk.
QUOTA_BACKEND_BYTES = 256 * 1024 * 1024
MAX_TXN_OPS = 4096

# Starting a member and electing a leader takes ~1 s here; leave room for a busy CI box.
START_DEADLINE_S = 30.0
HEALTH_POLL_INTERVAL_S = 0.05
LOG_TAIL_CHARS = 2000


class EtcdLaunchError(RuntimeError):
    """etcd is missing or did not become healthy in time."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scratch_root() -> str | None:
    # etcd fsyncs every commit; on tmpfs that is free, which keeps the store tests fast.
    # The tests exercise the client and the cluster, not etcd's own disk durability.
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@dataclass(slots=True)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-LOG_TAIL_CHARS:]

    def post_json(self, path: str, body: dict[str, object], timeout: float = 1.0) -> object:
        """POST to etcd's JSON gateway (e.g. /v3/maintenance/status) and decode the reply."""
        request = urllib.request.Request(
            self.client_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())

    def healthy(self) -> bool:
        if not self.running:
            return False
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1.0) as reply:
                return bool(json.loads(reply.read()).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False


@dataclass(slots=True)
class EtcdCluster:
    """N etcd members on loopback; see the module docstring."""

    members: list[EtcdMember]
    base_dir: Path
    _stopped: bool = field(default=False)

    @classmethod
    def start(cls, size: int = 1, *, deadline_s: float = START_DEADLINE_S) -> EtcdCluster:
        if not ETCD_BINARY.exists():
            raise EtcdLaunchError(
                f"{ETCD_BINARY} not found: the store tests run a real etcd; "
                "install it with `apt-get install etcd-server`"
            )
        base_dir = Path(tempfile.mkdtemp(prefix="mycelium-etcd-", dir=_scratch_root()))
        members = []
        for index in range(size):
            data_dir = base_dir / f"m{index}"
            members.append(
                EtcdMember(
                    name=f"m{index}",
                    client_port=_free_port(),
                    peer_port=_free_port(),
                    data_dir=data_dir,
                    log_path=base_dir / f"m{index}.log",
                )
            )
        cluster = cls(members=members, base_dir=base_dir)
        try:
            for member in members:
                cluster._launch(member)
            cluster.wait_healthy(deadline_s=deadline_s)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def endpoints(self) -> list[str]:
        """host:port of every member, in member order (dead ones included)."""
        return [member.endpoint for member in self.members]

    @property
    def url(self) -> str:
        """The store URL for `mycelium.store.open_store`."""
        return "etcd://" + ",".join(self.endpoints)

    def _launch(self, member: EtcdMember) -> None:
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            str(ETCD_BINARY),
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial_cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.base_dir.name}",
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_TIMEOUT_MS}",
            f"--quota-backend-bytes={QUOTA_BACKEND_BYTES}",
            # An apply is one transaction with a compare per resource; etcd's default of
            # 128 operations would cap one apply at 128 resources.
            f"--max-txn-ops={MAX_TXN_OPS}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        with member.log_path.open("ab") as log:
            member.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test terminal is ours to handle
            )

    def wait_healthy(self, *, deadline_s: float = START_DEADLINE_S) -> None:
        """Return once every running member answers /health with a leader; else raise."""
        deadline = time.monotonic() + deadline_s
        while True:
            alive = [m for m in self.members if m.process is not None]
            dead = [m for m in alive if not m.running]
            if dead:
                raise EtcdLaunchError(self._report(f"etcd member {dead[0].name} exited", dead))
            if all(m.healthy() for m in alive):
                return
            if time.monotonic() > deadline:
                raise EtcdLaunchError(
                    self._report(f"etcd not healthy after {deadline_s:.0f} s", alive)
                )
            time.sleep(HEALTH_POLL_INTERVAL_S)

    def _report(self, headline: str, members: list[EtcdMember]) -> str:
        tails = "\n".join(f"--- {m.name} ({m.log_path}):\n{m.log_tail()}" for m in members)
        return f"{headline}; member logs:\n{tails}"

    def leader_index(self) -> int:
        """Index in `members` of the current leader, asked of the first live member."""
        for member in self.members:
            if not member.running:
                continue
            with contextlib.suppress(OSError, ValueError):
                status = member.post_json("/v3/maintenance/status", {})
                assert isinstance(status, dict)
                leader_id = str(status["leader"])
                members = member.post_json("/v3/cluster/member/list", {})
                assert isinstance(members, dict)
                for entry in members["members"]:
                    if str(entry["ID"]) == leader_id:
                        return self._index_of(str(entry["name"]))
        raise EtcdLaunchError(self._report("no live etcd member knows a leader", self.members))

    def _index_of(self, name: str) -> int:
        for index, member in enumerate(self.members):
            if member.name == name:
                return index
        raise KeyError(name)

    def kill(self, index: int) -> None:
        """SIGKILL one member, as a crash would, and reap it."""
        process = self.members[index].process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def pause(self, index: int) -> None:
        """SIGSTOP one member: it keeps its sockets open but answers nothing, like a hang."""
        process = self.members[index].process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        """SIGCONT a member paused by `pause`."""
        process = self.members[index].process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End every member and delete all data; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        # The data is thrown away, so there is nothing to shut down gracefully; a polite
        # SIGTERM costs seconds per member while the others try to transfer leadership.
        for member in self.members:
            if member.running:
                assert member.process is not None
                member.process.kill()
        for member in self.members:
            if member.process is not None:
                member.process.wait(timeout=10)
        shutil.rmtree(self.base_dir, ignore_errors=True)


@contextlib.contextmanager
def running_etcd(size: int = 1) -> Iterator[EtcdCluster]:
    """An etcd cluster of `size` members for the duration of the block."""
    cluster = EtcdCluster.start(size)
    try:
        yield cluster
    finally:
        cluster.stop()
