"""Bookinfo under `myc up`, as the runtime tests drive it in either pod runtime.

`BookinfoMesh.start` copies examples/bookinfo to a directory of the test's own (so the
manifest's relative commands still work) with the ingress gateway's host port moved to
a free one, and runs `myc up` with the chosen runtime through a `MycShell`. Requests
go where a user's would: to the gateway on the host's loopback.
"""

from __future__ import annotations

import re
import shutil
import threading
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.myc_shell import MycShell, free_port
from tests.support.polling import wait_for

from mycelium.runtime.netns_pods import NetnsUnavailable, check_available

EXAMPLE = Path(__file__).parents[2] / "examples" / "bookinfo"
VERSION_ON_PAGE = re.compile(r'data-reviews-version="([^"]*)"')
POD_ON_PAGE = re.compile(r"Reviews served by reviews \w+ \(([^)]*)\)")
PRODUCTPAGE = "/productpage"


@dataclass(frozen=True, slots=True)
class Page:
    status: int
    body: str
    reason: str = ""

    @property
    def reviews_version(self) -> str | None:
        found = VERSION_ON_PAGE.search(self.body)
        return found.group(1) if found else None

    @property
    def reviews_pod(self) -> str | None:
        found = POD_ON_PAGE.search(self.body)
        return found.group(1) if found else None

    @property
    def complete(self) -> bool:
        """A 200 page with the book's details and its reviews, no dependency failing."""
        return (
            self.status == 200
            and 'class="error"' not in self.body
            and "William Shakespeare" in self.body
            and self.reviews_version is not None
        )


def get(url: str, timeout: float = 10) -> Page:
    """A GET straight to the address (no proxy); status 0 when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return Page(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        reason = exc.headers.get("x-mycelium-reason", "") or ""
        return Page(exc.code, exc.read().decode(errors="replace"), reason)
    except OSError as exc:
        return Page(0, str(exc))


def reviews_route(**weights: int) -> str:
    backends = "\n".join(
        f"        - {{name: reviews, subset: {version}, weight: {weight}}}"
        for version, weight in weights.items()
    )
    return f"""apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {{name: reviews, namespace: bookinfo}}
spec:
  parentRefs: [{{name: reviews}}]
  rules:
    - name: split
      backendRefs:
{backends}
      timeout: 3s
      retries: {{attempts: 2, perTryTimeout: 1s}}
"""


# Both pod runtimes, for a module-scoped fixture's params: netns pods need root.
RUNTIMES = [pytest.param("netns", marks=pytest.mark.system), "process"]


def bookinfo_for(runtime: str, base: Path) -> BookinfoMesh:
    """An unstarted bookinfo under `base` in `runtime`; netns pods' system tests fail,
    never skip, without root."""
    if runtime == "netns":
        try:
            check_available()
        except NetnsUnavailable as exc:
            pytest.fail(f"system tests need root: {exc}", pytrace=False)
    return BookinfoMesh(MycShell(base, pods=runtime), base / "bookinfo")


class BookinfoMesh:
    def __init__(self, shell: MycShell, directory: Path) -> None:
        self.shell = shell
        self.directory = directory
        self.gateway_port = free_port()
        self.before: dict[str, str] = {}  # kernel objects before `myc up`, to compare after

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}{PRODUCTPAGE}"

    def start(self) -> None:
        shutil.copytree(EXAMPLE, self.directory, dirs_exist_ok=True)
        manifest = self.directory / "mesh.yaml"
        text = manifest.read_text()
        assert "hostPort: 8080" in text, "the example's gateway port moved: update this helper"
        manifest.write_text(text.replace("hostPort: 8080", f"hostPort: {self.gateway_port}"))
        up = self.shell.up(manifest)
        assert up.returncode == 0, up.stdout + up.stderr
        # Ready pods; the sidecars may still be learning each other's endpoints.
        wait_for(lambda: self.page().complete, 30, f"a complete product page at {self.url}")

    def page(self) -> Page:
        return get(self.url)

    def apply(self, text: str) -> None:
        done = self.shell.myc("apply", "-f", "-", input_text=text)
        assert done.returncode == 0, done.stdout + done.stderr

    def pages(self, count: int, workers: int = 4) -> list[Page]:
        """`count` product pages fetched by `workers` clients at once."""
        results: list[Page] = []
        lock = threading.Lock()
        left = iter(range(count))

        def client() -> None:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                page = self.page()
                with lock:
                    results.append(page)

        threads = [threading.Thread(target=client) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        return results

    def versions(self, count: int) -> Counter[str]:
        pages = self.pages(count)
        failed = [p for p in pages if not p.complete]
        assert not failed, f"{len(failed)} of {count} pages incomplete; first: {failed[0]}"
        return Counter(p.reviews_version or "" for p in pages)


class SteadyLoad:
    """Clients fetching pages without pause until stopped; every answer is kept."""

    def __init__(self, mesh: BookinfoMesh, workers: int = 2) -> None:
        self.mesh = mesh
        self.pages: list[Page] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(workers)]

    def _client(self) -> None:
        while not self._stop.is_set():
            self.pages.append(self.mesh.page())

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
