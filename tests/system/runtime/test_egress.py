"""Egress under `myc up` with netns pods: the shop namespace is REGISTRY_ONLY and leaves
the mesh only through an egress gateway that runs in the host's network.

The "outside world" is a small HTTP server on the host's 127.0.0.1, which netns pods
have no route to. A pod's curl reaches it by its declared external name through the
gateway; a direct connection to a destination no Service names is refused by the
pod's sidecar (egress_denied); and the server's every client is the host (the
gateway), never a pod address.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.support.myc_shell import MycShell

from mycelium.runtime.netns_pods import NetnsUnavailable, check_available

pytestmark = pytest.mark.system

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "egress" / "mesh.yaml"
POD_NETWORK = ipaddress.ip_network("198.18.64.0/18")


class Outside(ThreadingHTTPServer):
    """Answers every GET with what it saw; remembers each client and Host."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str]] = []  # (client address, Host)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    server: Outside

    def do_GET(self) -> None:
        self.server.seen.append((self.client_address[0], self.headers.get("Host", "")))
        body = json.dumps({"outside": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    server = Outside()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def shell(outside: Outside, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MycShell]:
    try:
        check_available()
    except NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    base = tmp_path_factory.mktemp("egress")
    manifest = base / "mesh.yaml"
    manifest.write_text(
        EXAMPLE.read_text().replace("targetPort: 18181", f"targetPort: {outside.port}")
    )
    shell = MycShell(base, pods="netns")
    try:
        up = shell.up(manifest)
        assert up.returncode == 0, up.stdout + up.stderr
        yield shell
    finally:
        shell.down()


def shop_pod(shell: MycShell) -> str:
    rows = shell.pods_when(
        lambda rows: any(r[1].startswith("shop-") and r[2] == "1/1" for r in rows),
        "the shop pod ready",
    )
    return next(r[1] for r in rows if r[1].startswith("shop-"))


def curl_in(shell: MycShell, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
    """curl, run in the shop pod (through its sidecar), bounded to 10 s."""
    return shell.myc("exec", "-n", "shop", pod, "--", "curl", "-s", "--max-time", "10", *args)


def test_a_pod_reaches_an_external_service_only_through_the_egress_gateway(
    shell: MycShell, outside: Outside
) -> None:
    pod = shop_pod(shell)
    done = curl_in(shell, pod, "-i", "http://api.example.com/prices")
    assert done.returncode == 0, done.stderr + shell.pod_log("shop", pod)
    assert done.stdout.startswith("HTTP/1.1 200"), done.stdout
    assert '"outside": true' in done.stdout
    assert outside.seen, "the outside saw nothing"
    for client, host in outside.seen:
        assert host == "api.example.com"  # the caller's Host, kept all the way
        assert ipaddress.ip_address(client) not in POD_NETWORK  # the gateway, on the host


def test_a_direct_connection_outside_the_registry_is_refused(
    shell: MycShell, outside: Outside
) -> None:
    pod = shop_pod(shell)
    before = len(outside.seen)
    # The node's bridge address: reachable from the pod, but no Service names it.
    done = curl_in(shell, pod, f"http://198.18.64.1:{outside.port}/")
    assert done.returncode != 0, done.stdout
    stats = curl_in(shell, pod, "http://127.0.0.1:15000/stats")
    assert stats.returncode == 0, stats.stderr
    counters = json.loads(stats.stdout)["counters"]
    assert counters.get("refused_egress_denied", 0) >= 1, counters
    assert counters.get("tcp_passthrough", 0) == 0, counters
    assert len(outside.seen) == before
