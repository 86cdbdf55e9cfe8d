"""A real controller started the way an operator starts it (`myc controller`, as a
subprocess on free loopback ports, with its own home), and a way to run `myc` against it
as a separate process too, so that the entry point, the environment variables and the
exit codes are exercised exactly as a shell would see them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Starting includes creating the CA and the store: generous, but a hang still fails.
STARTUP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
# The installed entry point, as an operator runs it (the venv's `myc` script).
MYC = [str(Path(sys.executable).parent / "myc")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    """What one `myc` invocation did."""

    code: int
    stdout: str
    stderr: str

    def ok(self) -> str:
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        return self.stdout


@dataclass
class Controller:
    url: str
    discovery_port: int
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @staticmethod
    def free_port() -> int:
        """A loopback port nothing listens on (for "not running" stories)."""
        return free_port()

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYC_")}
        env.update(MYC_CONTROLLER=self.url, MYC_HOME=str(self.home), COLUMNS="200")
        env.update(extra)
        return env

    def myc(self, *args: str, stdin: str | None = None, **env: str) -> Run:
        done = subprocess.run(
            [*MYC, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(**env),
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    async def amyc(self, *args: str, stdin: str | None = None, **env: str) -> Run:
        """`myc` without blocking the event loop (for tests that also run a proxy)."""
        process = await asyncio.create_subprocess_exec(
            *MYC,
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(**env),
        )
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin else None), COMMAND_TIMEOUT_S
        )
        assert process.returncode is not None
        return Run(process.returncode, out.decode(), err.decode())

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """A long-running `myc` (e.g. --watch) whose output the test reads line by line."""
        return subprocess.Popen(
            [*MYC, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(PYTHONUNBUFFERED="1"),
        )


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/version", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    api_port, discovery_port = free_port(), free_port()
    home = tmp_path / "home"
    log = tmp_path / "controller.log"
    url = f"http://127.0.0.1:{api_port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *MYC,
                "controller",
                "--home",
                str(home),
                "--listen-api",
                f"127.0.0.1:{api_port}",
                "--listen-discovery",
                f"127.0.0.1:{discovery_port}",
                # `myc proxy` runs here without join tokens too
                "--allow-anonymous-proxies",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("MYC_")},
        )
    running = Controller(url, discovery_port, home, process, log)
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"myc controller exited with {process.returncode}:\n{log.read_text()}"
                )
            return _answers(url)

        wait_until(up, STARTUP_TIMEOUT_S, "the controller answers /version")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
