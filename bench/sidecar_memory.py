"""What a sidecar's memory is made of: the resident size each import adds, and a
running proxy's resident size at rest.

1. In a fresh interpreter, the sidecar's dependencies and its own packages are imported
   one at a time, in the order the proxy loads them, and the resident set size
   (VmRSS) is read after each: what each costs, cumulated. The modules the proxy does
   not import at all are checked too (the CLI's Typer and rich, aiohttp, pydantic,
   PyYAML): loading `mycelium.proxy.__main__` must not pull them in.
2. A real proxy (`python -m mycelium.proxy`, as `myc proxy` execs it) is started with
   no controller to reach, so it serves its listeners and retries discovery; its
   VmRSS is read once it has been up for `--settle` seconds: a sidecar at rest, before
   any config (a bookinfo sidecar holds a few hundred kB of config more).

The issue's target is an idle sidecar under 30 MB (Linkerd's proxy: 18-26 MB). Run:

    .venv/bin/python bench/sidecar_memory.py [--settle 3] [--json FILE]

`--smoke` (CI's run, tests/integration/bench) settles for 1 s. Needs nothing but the
project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# In the order the proxy's own imports reach them (python -X importtime), then ours.
IMPORTS = [
    "_ssl",  # OpenSSL itself
    "ssl",
    "asyncio",
    "uvloop",
    "msgspec",
    "httptools",
    "h2.connection",
    "cryptography.x509",
    "mycelium.discovery.protocol",
    "mycelium.discovery.client",
    "mycelium.identity.renewal",
    "mycelium.telemetry.metrics",
    "mycelium.proxy.core",
    "mycelium.proxy.listeners.server",
    "mycelium.proxy.__main__",
]
# What a sidecar must never load: the CLI's and the controller's libraries.
NOT_IN_THE_SIDECAR = ["typer", "rich", "aiohttp", "pydantic", "yaml", "prometheus_client"]

_PROBE = """
import json, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
rows = [["(interpreter)", rss()]]
for name in sys.argv[1].split(","):
    __import__(name)
    rows.append([name, rss()])
print(json.dumps({"rows": rows, "loaded": [m for m in sys.argv[2].split(",") if m in sys.modules]}))
"""


def import_costs() -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(IMPORTS), ",".join(NOT_IN_THE_SIDECAR)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(done.stdout))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def idle_proxy_rss(settle: float) -> float:
    """A proxy at rest, with nothing to discover: its VmRSS after `settle` seconds."""
    sys.path.insert(0, str(ROOT / "src"))
    from mycelium.control.ca import CertificateAuthority
    from mycelium.discovery.client import ControllerAddress
    from mycelium.discovery.protocol import NodeInfo
    from mycelium.proxy.settings import ListenAddress, ProxySettings

    work = Path(tempfile.mkdtemp(prefix="myc-bench-memory-"))
    # a mesh root to trust, as `myc up` gives one; no controller ever presents a chain
    (work / "root.pem").write_bytes(CertificateAuthority(work / "ca", "cluster.local").bundle_pem)
    settings = ProxySettings(
        node=NodeInfo(id="memory-0"),
        controllers=[ControllerAddress("127.0.0.1", _free_port())],  # nothing listens
        trust_bundle=work / "root.pem",
        outbound=ListenAddress("127.0.0.1", _free_port()),
        admin=ListenAddress("127.0.0.1", _free_port()),
        health=ListenAddress("127.0.0.1", _free_port()),
        metrics=ListenAddress("127.0.0.1", _free_port()),
    )
    log = (work / "proxy.log").open("wb")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "mycelium.proxy", settings.to_json().decode()],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        time.sleep(settle)
        if proxy.poll() is not None:
            output = (work / "proxy.log").read_text(errors="replace")
            raise RuntimeError(f"the proxy exited ({proxy.returncode}) at start:\n{output}")
        return _rss_of(proxy.pid)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before reading")
    parser.add_argument("--smoke", action="store_true", help="CI's quick run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    costs = import_costs()
    idle = idle_proxy_rss(1.0 if args.smoke else args.settle)
    rows = costs["rows"]
    assert isinstance(rows, list)
    print(f"{'import':36s} {'adds MB':>8s} {'RSS MB':>8s}")
    previous = 0.0
    for name, rss in rows:
        print(f"{name:36s} {rss - previous:8.1f} {rss:8.1f}")
        previous = rss
    print(f"{'a proxy at rest, no config':36s} {'':8s} {idle:8.1f}")
    loaded = costs["loaded"]
    print(f"not the sidecar's, yet loaded: {', '.join(loaded) if loaded else 'none'}")  # type: ignore[arg-type]
    if args.json:
        args.json.write_text(json.dumps({"imports": rows, "idle_rss_mb": idle, "loaded": loaded}))
    if loaded:
        sys.exit(1)


if __name__ == "__main__":
    main()
