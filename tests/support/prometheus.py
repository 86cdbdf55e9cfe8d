"""Debian's Prometheus server, run by a test against a mesh: the real thing, not a parser.

`PrometheusServer.start` writes the config it is given into a directory of the test's
own, starts `/usr/bin/prometheus` on a free loopback port with its storage there, and
waits until it is ready; `query` evaluates PromQL through its HTTP API (an instant
query), `stop` ends it. Installed by `make test`'s bootstrap (the `prometheus` package;
its system service is left disabled).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.myc_shell import free_port
from tests.support.polling import wait_for

PROMETHEUS = "/usr/bin/prometheus"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error (a bad query, say)."""


class PrometheusServer:
    def __init__(self, directory: Path, config: str) -> None:
        self.directory = directory
        self.config = config
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        if shutil.which(PROMETHEUS) is None:
            raise AssertionError(f"{PROMETHEUS} is missing: apt-get install prometheus")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(self.config)
        log = (self.directory / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 60, f"Prometheus ready on {self.url} (log: {log.name})")
        return self

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            log = (self.directory / "prometheus.log").read_text(errors="replace")
            raise AssertionError(f"Prometheus exited ({self._process.returncode}):\n{log}")
        try:
            with _DIRECT.open(f"{self.url}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result: a list of {"metric": labels, "value": [t, v]}."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with _DIRECT.open(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{promql!r}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        """The active targets, as service discovery found them."""
        with _DIRECT.open(f"{self.url}/api/v1/targets?state=active", timeout=30) as response:
            return list(json.load(response)["data"]["activeTargets"])

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
