"""Transparent capture in real network namespaces: SO_ORIGINAL_DST, then the relay onwards.

The lab is two namespaces joined by a veth wire on 198.18.0.0/30: a client host and a
pod. In the pod, nftables redirects TCP for the app port 9080 to the capture listener on
15001, for connections arriving over the wire (prerouting: inbound) and for the pod's
own connections (output: outbound), except those the proxy marks with SO_MARK, as a
sidecar's rules must. The "sidecar" is an event loop on a thread inside the pod.

Needs root; without it the lab fixture fails with a message saying so (never a skip).
Every namespace, veth and nftables table is removed after each test, and the fixture
checks that `ip netns list` and `ip link` show none of them.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import pytest
import uvloop
from tests.support.netns import (
    Namespace,
    NetnsLab,
    NetnsUnavailable,
    host_interface_names,
    host_namespace_names,
    system_lab,
)

from mycelium.net.dial import Dialer
from mycelium.net.original_dst import (
    NotRedirected,
    OriginalDestinationError,
    original_destination,
    parse_sockaddr_in,
    parse_sockaddr_in6,
)
from mycelium.net.relay import RelayResult, TcpRelay

pytestmark = pytest.mark.system

CLIENT_ADDRESS = "198.18.0.1"
POD_ADDRESS = "198.18.0.2"
APP_PORT = 9080
CAPTURE_PORT = 15001
PROXY_MARK = 0x539  # 1337, the number Istio gives its proxy's uid
CLIENT_TIMEOUT = 10.0  # seconds; every exchange here takes milliseconds

CAPTURE_RULES = """
table ip {table} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{wire}" tcp dport {app_port} counter redirect to :{capture_port}
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        meta mark {mark} counter return
        tcp dport {app_port} counter redirect to :{capture_port}
    }}
}}
"""


@dataclass
class Pod:
    client: Namespace  # a host on the other end of the wire
    pod: Namespace
    table: str  # the pod's nftables table


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    yield from system_lab()


@pytest.fixture
def captured_pod(lab: NetnsLab) -> Pod:
    client = lab.namespace("client")
    pod = lab.namespace("pod")
    _, pod_wire = lab.link(client, CLIENT_ADDRESS, pod, POD_ADDRESS)
    table = f"{lab.prefix}_capture"
    pod.apply_nftables(
        CAPTURE_RULES.format(
            table=table,
            wire=pod_wire,
            app_port=APP_PORT,
            capture_port=CAPTURE_PORT,
            mark=PROXY_MARK,
        )
    )
    return Pod(client, pod, table)


# --- what runs in the pod: capture listeners and the app ------------------------------


class ReportingCapture(asyncio.Protocol):
    """Answers each connection with its original destination, or why it has none."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        try:
            address, port = original_destination(transport.get_extra_info("socket"))
            answer = f"{address}:{port}"
        except NotRedirected as exc:
            answer = f"not redirected: {exc}"
        self.transport.write(answer.encode())

    def eof_received(self) -> bool:
        # closing only once the client's bytes are read: unread bytes would turn the
        # close into a reset
        return False


@dataclass
class RelayingCapture:
    """The sidecar's outbound path: relay each captured connection to where it was going."""

    results: list[RelayResult] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def protocol(self) -> asyncio.Protocol:
        return _HandOver(self)

    def hand_over(self, transport: asyncio.Transport) -> None:
        destination = original_destination(transport.get_extra_info("socket"))
        relay = TcpRelay(transport, idle_timeout=CLIENT_TIMEOUT)
        relay.connect(*destination, connect_timeout=CLIENT_TIMEOUT, dialer=Dialer(mark=PROXY_MARK))
        task = asyncio.get_running_loop().create_task(self._record(relay))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _record(self, relay: TcpRelay) -> None:
        self.results.append(await relay.wait())

    async def relays_ended(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), CLIENT_TIMEOUT)


class _HandOver(asyncio.Protocol):
    def __init__(self, capture: RelayingCapture) -> None:
        self.capture = capture

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.capture.hand_over(cast(asyncio.Transport, transport))


async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The pod's application: reads a request to its end, answers, closes."""
    request = await reader.read()
    writer.write(b"app got " + request)
    await writer.drain()
    writer.close()


async def listen(
    protocol_factory: Callable[[], asyncio.Protocol],
    address: str,
    port: int = CAPTURE_PORT,
    *,
    dualstack: bool = False,
) -> asyncio.Server:
    """A listener in the pod (this coroutine runs on the pod's loop)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # asyncio and uvloop make IPv6 listeners v6-only: build a dual-stack socket by hand
    sock = socket.create_server((address, port), family=family, dualstack_ipv6=dualstack)
    return await asyncio.get_running_loop().create_server(protocol_factory, sock=sock)


async def start_app() -> asyncio.Server:
    return await asyncio.start_server(app, POD_ADDRESS, APP_PORT)


async def close_servers(*servers: asyncio.Server) -> None:
    for server in servers:
        server.close()


# --- what runs on the client host --------------------------------------------------------


def ask(address: str, port: int, request: bytes = b"", family: int = socket.AF_INET) -> bytes:
    """Connect, send the request and half-close, read the answer to its end."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect((address, port))
        if request:
            sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def ask_from_pod(address: str, port: int, mark: int | None = None) -> bytes:
    """The same, from a process in the pod; `mark` as the proxy would set it."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        sock.setblocking(False)
        await loop.sock_connect(sock, (address, port))
        await loop.sock_sendall(sock, b"hi")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := await loop.sock_recv(sock, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def rule_counters(pod: Pod, chain: str) -> list[int]:
    """Packet counters of a chain's rules, in order."""
    listing = pod.pod.run("nft", "list", "chain", "ip", pod.table, chain)
    return [int(n) for n in re.findall(r"counter packets (\d+)", listing)]


# --- stories -------------------------------------------------------------------------------


@pytest.mark.parametrize("listener_family", ["ipv4", "dual-stack"])
def test_the_listener_sees_where_a_redirected_client_was_going(
    captured_pod: Pod, listener_family: str
) -> None:
    address = "0.0.0.0" if listener_family == "ipv4" else "::"
    with captured_pod.pod.event_loop(uvloop.new_event_loop) as pod:
        capture = pod.run(listen(ReportingCapture, address, dualstack=address == "::"))
        answer = captured_pod.client.call(ask, POD_ADDRESS, APP_PORT)
        pod.run(close_servers(capture))
    assert answer == f"{POD_ADDRESS}:{APP_PORT}".encode()


def test_a_client_that_dials_the_capture_port_itself_is_told_it_was_not_redirected(
    captured_pod: Pod,
) -> None:
    with captured_pod.pod.event_loop(uvloop.new_event_loop) as pod:
        capture = pod.run(listen(ReportingCapture, "0.0.0.0"))
        answer = captured_pod.client.call(ask, POD_ADDRESS, CAPTURE_PORT).decode()
        pod.run(close_servers(capture))
    assert answer.startswith("not redirected: ")
    assert f"to {POD_ADDRESS}:{CAPTURE_PORT} was not redirected" in answer
    assert "original destination is the listener itself" in answer


def test_the_relay_takes_a_captured_connection_to_its_original_destination(
    captured_pod: Pod,
) -> None:
    sidecar = RelayingCapture()
    with captured_pod.pod.event_loop(uvloop.new_event_loop) as pod:
        capture = pod.run(listen(sidecar.protocol, "0.0.0.0"))
        application = pod.run(start_app())
        answer = captured_pod.client.call(ask, POD_ADDRESS, APP_PORT, b"GET / HTTP/1.0\r\n\r\n")
        pod.run(sidecar.relays_ended())
        pod.run(close_servers(capture, application))
    assert answer == b"app got GET / HTTP/1.0\r\n\r\n"
    [result] = sidecar.results
    assert result.ended_by == "completed"
    assert result.upstream_address == (POD_ADDRESS, APP_PORT)
    assert (result.bytes_to_upstream, result.bytes_to_downstream) == (18, 26)
    # the client's SYN was captured on the wire; the relay's own, marked, was let through
    inbound_redirects = rule_counters(captured_pod, "prerouting")
    marked_passes, outbound_redirects = rule_counters(captured_pod, "output")
    assert inbound_redirects == [1]
    assert (marked_passes, outbound_redirects) == (1, 0)


def test_only_the_proxys_marked_traffic_escapes_the_pods_capture(captured_pod: Pod) -> None:
    with captured_pod.pod.event_loop(uvloop.new_event_loop) as pod:
        capture = pod.run(listen(ReportingCapture, "0.0.0.0"))
        application = pod.run(start_app())
        from_the_app = pod.run(ask_from_pod(POD_ADDRESS, APP_PORT))
        from_the_proxy = pod.run(ask_from_pod(POD_ADDRESS, APP_PORT, mark=PROXY_MARK))
        pod.run(close_servers(capture, application))
    assert from_the_app == f"{POD_ADDRESS}:{APP_PORT}".encode()  # captured
    assert from_the_proxy == b"app got hi"  # straight to the app


def test_an_ipv6_connection_reports_its_original_destination(lab: NetnsLab) -> None:
    pod_ns = lab.namespace("pod6")
    pod_ns.apply_nftables(
        f"""
        table ip6 {lab.prefix}_capture6 {{
            chain output {{
                type nat hook output priority -100; policy accept;
                ip6 daddr ::1 tcp dport {APP_PORT} redirect to :{CAPTURE_PORT}
            }}
        }}
        """
    )
    with pod_ns.event_loop(uvloop.new_event_loop) as pod:
        capture = pod.run(listen(ReportingCapture, "::1"))
        answer = pod_ns.call(ask, "::1", APP_PORT, b"", socket.AF_INET6)
        pod.run(close_servers(capture))
    assert answer == f"::1:{APP_PORT}".encode()


def test_a_connection_in_a_namespace_without_rules_was_not_redirected(lab: NetnsLab) -> None:
    bare = lab.namespace("bare")

    def accept_one_and_ask_the_kernel() -> str:
        with (
            socket.create_server(("127.0.0.1", 0)) as server,
            socket.create_connection(server.getsockname(), timeout=CLIENT_TIMEOUT),
        ):
            accepted, _ = server.accept()
            with accepted, pytest.raises(NotRedirected) as caught:
                original_destination(accepted)
        return str(caught.value)

    message = bare.call(accept_one_and_ask_the_kernel)
    assert "was not redirected" in message
    assert "check that the interception rules are installed" in message


def test_a_failing_test_still_leaves_nothing_behind() -> None:
    try:
        lab = NetnsLab()
    except NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    names: list[str] = []

    def a_test_that_fails() -> None:
        with lab:
            client = lab.namespace("client")
            pod = lab.namespace("pod")
            names.extend([client.name, pod.name])
            names.extend(lab.link(client, "198.18.0.5", pod, "198.18.0.6"))
            pod.apply_nftables(f"table ip {lab.prefix}_t {{\n chain c {{\n }}\n}}\n")
            raise RuntimeError("the test body failed")

    with pytest.raises(RuntimeError, match="the test body failed"):
        a_test_that_fails()
    assert len(names) == 4
    assert not set(names) & (host_namespace_names() | host_interface_names())


def test_the_lab_refuses_addresses_outside_the_benchmarking_range(lab: NetnsLab) -> None:
    a, b = lab.namespace("a"), lab.namespace("b")
    with pytest.raises(ValueError, match=r"outside 198\.18\.0\.0/15"):
        lab.link(a, "10.0.0.1", b, "10.0.0.2")


# --- decoding the kernel's answer (no root needed) --------------------------------------


def test_a_sockaddr_in_decodes_to_address_and_port() -> None:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s", 9080, bytes([198, 18, 0, 2]))
    assert parse_sockaddr_in(raw + bytes(8)) == ("198.18.0.2", 9080)


def test_a_sockaddr_in6_decodes_to_address_and_port() -> None:
    address = socket.inet_pton(socket.AF_INET6, "2001:2::7")
    raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16sI", 443, 0, address, 0)
    assert parse_sockaddr_in6(raw) == ("2001:2::7", 443)


def test_a_truncated_or_foreign_sockaddr_is_an_error() -> None:
    with pytest.raises(OriginalDestinationError, match="needs 8 bytes"):
        parse_sockaddr_in(b"\x02\x00")
    foreign = struct.pack("=H", socket.AF_INET6) + bytes(14)
    with pytest.raises(OriginalDestinationError, match="expected an AF_INET address"):
        parse_sockaddr_in(foreign)
