"""Network namespaces for tests: throwaway hosts joined by veth wires, removed on exit.

A `NetnsLab` owns every namespace and link a test makes. Names carry a prefix unique to
the lab (`myc` + 6 hex digits), so parallel runs and other engineers' tests never collide
and a leftover is easy to attribute. Leaving the `with` block deletes every namespace
the lab created, even when the test failed; deleting a namespace also destroys the veth
ends and the nftables tables inside it, so nothing is left to undo on the host.

    with NetnsLab() as lab:
        client = lab.namespace("client")          # loopback already up
        pod = lab.namespace("pod")
        lab.link(client, "198.18.0.1", pod, "198.18.0.2")   # a /30 veth wire
        pod.apply_nftables("table ip capture { ... }")
        pod.run("ip", "route")                    # a subprocess inside the namespace
        sock = pod.call(socket.create_server, ("198.18.0.2", 15001))
        with pod.event_loop() as loop:            # an asyncio loop living in the pod
            server = loop.run(start_sidecar())    # its sockets are the pod's

Safety: the host's namespace is never changed. veth pairs are created with both ends
already inside their namespaces (`ip link add ... netns A ... peer ... netns B`), so no
interface appears on the host even for a moment; addresses must come from 198.18.0.0/15
(the benchmarking range), which `link` enforces; nftables rules are only ever applied
with `ip netns exec`. In-process work runs on a fresh thread that calls `os.setns` on the
namespace (Python 3.12): a socket created there belongs to that namespace for its whole
life, wherever it is used afterwards, and the calling thread stays where it was.

Everything needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN). Without it, `NetnsLab()` raises
`NetnsUnavailable`; system tests turn that into a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"
NFT = shutil.which("nft") or "/usr/sbin/nft"
NETNS_DIR = Path("/run/netns")
TEST_NETWORK = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: benchmarking only
COMMAND_TIMEOUT_S = 30.0
# Interface names are limited to 15 bytes by the kernel (IFNAMSIZ - 1).
MAX_INTERFACE_NAME = 15


class NetnsUnavailable(RuntimeError):
    """This process cannot create network namespaces (not root, or iproute2 missing)."""


class NetnsCommandFailed(RuntimeError):
    """A command run for the lab (ip, nft) exited with an error."""


def _check_output(argv: list[str], *, input_text: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NetnsUnavailable(f"{argv[0]} is not installed: {exc}") from exc
    if done.returncode != 0:
        raise NetnsCommandFailed(
            f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip() or done.stdout}"
        )
    return done.stdout


def host_namespace_names() -> set[str]:
    """The names `ip netns list` shows right now."""
    return {line.split()[0] for line in _check_output([IP, "netns", "list"]).splitlines() if line}


def host_interface_names() -> set[str]:
    """The interfaces of the host's own namespace (read only: to prove nothing leaked)."""
    names = set()
    for line in _check_output([IP, "-o", "link", "show"]).splitlines():
        # "4: eth0: <...>" or "5: veth0@if4: <...>"
        names.add(line.split(":")[1].strip().split("@")[0])
    return names


@dataclass(slots=True)
class Namespace:
    """One network namespace of a lab: run commands, functions and threads inside it."""

    name: str
    addresses: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def run(self, *argv: str, input_text: str | None = None) -> str:
        """Run a command inside the namespace; return its stdout, raise if it fails."""
        return _check_output([IP, "netns", "exec", self.name, *argv], input_text=input_text)

    def popen(self, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a long-running command inside the namespace; the caller ends it."""
        return subprocess.Popen([IP, "netns", "exec", self.name, *argv], **kwargs)  # type: ignore[call-overload, no-any-return]

    def apply_nftables(self, ruleset: str) -> None:
        """Load an nftables ruleset (`nft -f -` syntax) into this namespace only."""
        self.run(NFT, "-f", "-", input_text=ruleset)

    def nftables_ruleset(self) -> str:
        return self.run(NFT, "list", "ruleset")

    def start[T](self, fn: Callable[..., T], *args: object) -> Future[T]:
        """Run `fn(*args)` on a new thread that has entered this namespace.

        Sockets the function creates live in this namespace; so does an event loop it
        runs (`pod.start(asyncio.run, main())` is a process "inside the pod"). The thread
        is a daemon so that a hung test cannot keep the interpreter alive.
        """
        future: Future[T] = Future()

        def enter_and_run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                with open(self.path) as handle:
                    os.setns(handle.fileno(), os.CLONE_NEWNET)
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)

        threading.Thread(target=enter_and_run, name=f"netns-{self.name}", daemon=True).start()
        return future

    def call[T](self, fn: Callable[..., T], *args: object, timeout: float = 30.0) -> T:
        """Run `fn(*args)` inside the namespace and return its result (blocks the caller)."""
        return self.start(fn, *args).result(timeout=timeout)

    def event_loop(
        self, loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    ) -> NamespaceLoop:
        """An event loop on a thread inside this namespace, for `with` (see NamespaceLoop)."""
        return NamespaceLoop(self, loop_factory)


class NamespaceLoop:
    """An asyncio loop running on its own thread inside a namespace: "a process in the pod".

    Servers it starts listen in the namespace and connections it opens leave from it,
    while the test's own thread stays in the host's namespace and drives it with
    `run(coro)`. Leaving the `with` block cancels what is still running, closes the
    loop and joins the thread.
    """

    def __init__(
        self, namespace: Namespace, loop_factory: Callable[[], asyncio.AbstractEventLoop]
    ) -> None:
        self.namespace = namespace
        self._loop_factory = loop_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread: Future[None] | None = None

    def __enter__(self) -> Self:
        thread = self._thread = self.namespace.start(self._serve)
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not self._started.wait(0.01):
            if thread.done():  # entering the namespace failed: raise why
                thread.result()
            if time.monotonic() > deadline:
                raise NetnsCommandFailed(f"no event loop started in {self.namespace.name}")
        if self._loop is None:  # the loop factory failed: raise why
            thread.result(timeout=COMMAND_TIMEOUT_S)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.result(timeout=COMMAND_TIMEOUT_S)

    def run[T](self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the namespace's loop; wait for its result here."""
        assert self._loop is not None, "use NamespaceLoop in a with block"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _serve(self) -> None:
        try:
            loop = self._loop = self._loop_factory()
            asyncio.set_event_loop(loop)  # this thread's own: gather() below looks for it
        finally:
            self._started.set()  # also on failure: __enter__ then reports the error
        try:
            loop.run_forever()
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class NetnsLab:
    """Creates namespaces and veth wires with unique names and deletes them all on exit."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise NetnsUnavailable(
                "network namespace tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN); "
                f"this process runs as uid {os.geteuid()}: run the system tests as root, "
                "as CI does"
            )
        if not Path(IP).exists() or not Path(NFT).exists():
            raise NetnsUnavailable(
                f"iproute2 ({IP}) and nftables ({NFT}) are needed: apt-get install "
                "iproute2 nftables"
            )
        self.prefix = "myc" + secrets.token_hex(3)
        self.namespaces: list[Namespace] = []
        self.interfaces: list[str] = []
        self._links = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespace(self, label: str) -> Namespace:
        """A new namespace named `<prefix>-<label>` with its loopback up."""
        ns = Namespace(f"{self.prefix}-{label}")
        _check_output([IP, "netns", "add", ns.name])
        self.namespaces.append(ns)  # registered first: deleted on exit even if lo fails
        _check_output([IP, "-n", ns.name, "link", "set", "lo", "up"])
        return ns

    def link(
        self, left: Namespace, left_address: str, right: Namespace, right_address: str
    ) -> tuple[str, str]:
        """Join two namespaces with a veth pair on a /30 of 198.18.0.0/15; return its ends.

        The ends are named `<prefix>v<n>a` and `<prefix>v<n>b` and are created directly
        inside their namespaces.
        """
        for address in (left_address, right_address):
            if ipaddress.ip_address(address) not in TEST_NETWORK:
                raise ValueError(f"{address} is outside {TEST_NETWORK}, the only range tests use")
        self._links += 1
        left_if = f"{self.prefix}v{self._links}a"
        right_if = f"{self.prefix}v{self._links}b"
        assert len(right_if) <= MAX_INTERFACE_NAME, right_if
        left_end = ["name", left_if, "netns", left.name]
        right_end = ["name", right_if, "netns", right.name]
        _check_output([IP, "link", "add", *left_end, "type", "veth", "peer", *right_end])
        self.interfaces += [left_if, right_if]
        for ns, ifname, address in (
            (left, left_if, left_address),
            (right, right_if, right_address),
        ):
            _check_output([IP, "-n", ns.name, "addr", "add", f"{address}/30", "dev", ifname])
            _check_output([IP, "-n", ns.name, "link", "set", ifname, "up"])
            ns.addresses.append(address)
        return left_if, right_if

    def close(self) -> None:
        """Delete every namespace of the lab (and with them their links and rules)."""
        errors = []
        for ns in reversed(self.namespaces):
            try:
                _check_output([IP, "netns", "delete", ns.name])
            except NetnsCommandFailed as exc:
                errors.append(str(exc))
        self.namespaces.clear()
        if errors:
            raise NetnsCommandFailed("; ".join(errors))

    def leftovers(self) -> list[str]:
        """Names of this lab's namespaces and links still visible on the host (want: [])."""
        found = [name for name in host_namespace_names() if name.startswith(self.prefix)]
        found += [name for name in host_interface_names() if name.startswith(self.prefix)]
        return found


def system_lab() -> Iterator[NetnsLab]:
    """The body of a system test's `lab` fixture (`yield from system_lab()`): a lab that
    fails the test, never skips it, without root, and proves nothing survived it."""
    try:
        lab = NetnsLab()
    except NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    with lab:
        yield lab
    assert lab.leftovers() == [], "namespaces or links survived the test"
