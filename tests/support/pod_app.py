"""A pod's app for runtime tests, run as its own process: `python pod_app.py MODE`.

Modes: `serve` answers HTTP on MYC_APP_ADDRESS:PORT until SIGTERM; `job` exits 0;
`crash-once` exits 1 the first time (counted in COUNTER_FILE), then serves. It appends
what it saw to EVENT_FILE: whether its sidecar was ready when it started, and whether
the sidecar was still up when SIGTERM came (the runtime stops the app first).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path


def sidecar_state() -> str:
    """ "ready", "left" (deregistered, still serving: a stop under way) or "gone"."""
    url = f"http://{os.environ['MYC_POD_ADDRESS']}:15021/healthz/ready"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return "ready" if response.status == 200 else "gone"
    except urllib.error.HTTPError as exc:
        return "left" if json.loads(exc.read() or b"{}").get("left") else "gone"
    except OSError:
        return "gone"


def note(line: str) -> None:
    with open(os.environ["EVENT_FILE"], "a") as events:
        events.write(line + "\n")


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {os.environ['MYC_POD_NAME']}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    mode = sys.argv[1]
    note(f"started sidecar={sidecar_state()}")
    if mode == "job":
        return
    if mode == "crash-once":
        counter = Path(os.environ["COUNTER_FILE"])
        runs = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(runs + 1))
        if runs == 0:
            sys.exit(1)

    def on_term(signum: int, frame: object) -> None:
        note(f"sigterm sidecar={sidecar_state()}")
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    address = (os.environ["MYC_APP_ADDRESS"], int(os.environ["PORT"]))
    http.server.ThreadingHTTPServer(address, Hello).serve_forever()


if __name__ == "__main__":
    main()
