"""`myc get --watch` prints the listing, then every change, until it is stopped."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Controller

SERVICE = """\
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: %s}
spec:
  selector: {app: %s}
  ports: [{name: http, port: %d}]
"""

# How long a change may take to travel store -> controller -> myc.
EVENT_TIMEOUT_S = 15.0


class Lines:
    """The stdout lines of a running process, read by a thread so a test can wait on them."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout
        threading.Thread(
            target=lambda: [self._queue.put(line) for line in stdout], daemon=True
        ).start()

    def next(self) -> str:
        try:
            return self._queue.get(timeout=EVENT_TIMEOUT_S).rstrip("\n")
        except queue.Empty:
            raise AssertionError(f"no output within {EVENT_TIMEOUT_S} s") from None


@contextmanager
def watching(controller: Controller, *args: str) -> Iterator[Lines]:
    process = controller.popen("get", "services", "--watch", *args)
    try:
        yield Lines(process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_json_events_follow_the_listing(controller: Controller) -> None:
    with watching(controller, "-o", "json") as events:
        # Whether this lands before the listing or after it, it is reported once, as ADDED:
        # the stream starts right after the revision the listing was read at.
        controller.myc("apply", "-f", "-", stdin=SERVICE % ("reviews", "reviews", 9080)).ok()
        added = json.loads(events.next())
        assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "reviews")

        controller.myc("apply", "-f", "-", stdin=SERVICE % ("reviews", "reviews", 9081)).ok()
        modified = json.loads(events.next())
        assert modified["type"] == "MODIFIED"
        assert modified["object"]["spec"]["ports"][0]["port"] == 9081

        controller.myc("delete", "svc", "reviews").ok()
        deleted = json.loads(events.next())
        assert deleted["type"] == "DELETED"
        assert deleted["object"]["metadata"]["name"] == "reviews"


def test_the_table_starts_with_what_exists_and_stays_aligned(controller: Controller) -> None:
    controller.myc("apply", "-f", "-", stdin=SERVICE % ("ratings", "ratings", 9080)).ok()
    with watching(controller) as lines:
        header, first = lines.next(), lines.next()
        assert header.split() == ["EVENT", "NAME", "VIP", "PORTS", "SELECTOR", "REVISION"]
        assert first.split()[:2] == ["ADDED", "ratings"]

        controller.myc("delete", "svc", "ratings").ok()
        deleted = lines.next()

        assert deleted.split()[:2] == ["DELETED", "ratings"]
        assert deleted.index("ratings") == header.index("NAME")
        assert deleted.rstrip().split()[-1].isdigit()
