"""`myc controller` as a real child process, for tests and benchmarks that must kill it,
restart it, or measure it from outside."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil

START_DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ControllerProcess:
    """A controller on free loopback ports; its output goes to `<home>/../controller.log`."""

    def __init__(
        self, home: Path, store_url: str | None = None, *, allow_anonymous_proxies: bool = True
    ) -> None:
        self.home = home
        self.store_url = store_url
        # The benchmarks' and crash tests' proxies and clients carry no join token.
        self.allow_anonymous_proxies = allow_anonymous_proxies
        self.api_port = free_port()
        self.discovery_port = free_port()
        self.log = home.parent / "controller.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def token(self) -> str:
        return (self.home / "admin-token").read_text().strip()

    async def start(self) -> None:
        """Start (or restart, same home and ports) and wait until the API answers."""
        self._spawn()
        await self._wait_ready()

    def _spawn(self) -> None:
        args = [
            str(Path(sys.executable).parent / "myc"),
            "controller",
            "--home",
            str(self.home),
            "--listen-api",
            f"127.0.0.1:{self.api_port}",
            "--listen-discovery",
            f"127.0.0.1:{self.discovery_port}",
        ]
        if self.store_url:
            args += ["--store", self.store_url]
        if self.allow_anonymous_proxies:
            args.append("--allow-anonymous-proxies")
        self.home.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_DEADLINE_S
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the controller exited:\n{self.log.read_text()}")
                try:
                    async with session.get(self.base + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise RuntimeError(f"the controller did not start:\n{self.log.read_text()}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    @property
    def rss_mb(self) -> float:
        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    @property
    def cpu_seconds(self) -> float:
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)
