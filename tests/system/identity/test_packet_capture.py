"""On the wire between two pods, mTLS leaves nothing of what the apps said in plaintext.

Two namespaces joined by one veth wire on 198.18.0.0/15:
- a (198.18.40.1): the controller (embedded store; discovery on the wire address, so
  b's sidecar can reach it, and the API on loopback), the `productpage` client
  sidecar (explicit mode, outbound on 127.0.0.1:15001) and the client app, which asks
  that sidecar for `ratings` as an HTTP proxy;
- b (198.18.40.2): the `ratings` app on 127.0.0.1:9080, which echoes what it got, a
  `ledger` TCP app on 127.0.0.1:7400 (an opaque port of the same pod), and
  its sidecar (explicit mode) serving it on 198.18.40.2:9080; the sidecar registers the
  workload itself, so callers' sidecars know it runs a proxy.

An AF_PACKET socket made inside a and bound to a's end of the wire records every frame
that crosses it, both ways, from before the app's request until after the response.
The app puts a fresh random marker in the request's path, a header and the body, and
gets it back in the echo. With SVIDs from join tokens and PeerAuthentication STRICT
the capture must not hold the marker anywhere; the control, the same exchange between
sidecars that have no SVIDs, must show it, so the first test cannot pass just because
the capture saw nothing. A third test does the same for an opaque TCP service, whose
bytes the sidecars relay inside mTLS. Every namespace, and with it the wire, is
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import secrets
import socket
import struct
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import pytest
import uvloop
from aiohttp import web
from tests.support.controller import Api, controller_config
from tests.support.netns import Namespace, NamespaceLoop, NetnsLab, NetnsUnavailable
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery.client import ControllerAddress
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, LocalUpstream, ProxySettings

pytestmark = pytest.mark.system

A_ADDRESS = "198.18.40.1"
B_ADDRESS = "198.18.40.2"
APP_PORT = 9080  # the app's port in b, and its sidecar's inbound port on the wire
OUTBOUND_PORT = 15001
LEDGER_PORT = 7400  # an opaque TCP service of the same pod, relayed as bytes
LEDGER_LOCAL_PORT = 17400  # where productpage's app reaches it (explicit mode)
TIMEOUT = 10.0  # seconds; everything here takes milliseconds

SERVICE = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ratings}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: ledger}
spec:
  selector: {app: ratings}
  ports: [{name: ledger, port: 7400, opaque: true}]
"""
STRICT = """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
"""

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_HEADER = 14
IPPROTO_TCP = 6
FRAME_BUFFER = 1 << 18  # larger than any (GSO) frame the kernel hands a packet socket
CAPTURE_BUFFER = 1 << 22  # the socket's receive buffer: discovery chatter never fills it
TLS_APPLICATION_DATA = b"\x17\x03\x03"  # a TLS record header: encrypted application data
SO_RCVBUFFORCE = 33  # Linux: SO_RCVBUF beyond net.core.rmem_max (CAP_NET_ADMIN); not in `socket`


# --- the capture ---------------------------------------------------------------------------


type Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Segment:
    """The TCP payload of one captured IPv4 frame, with its addresses."""

    source: Address
    destination: Address
    payload: bytes


def tcp_segment(frame: bytes) -> Segment | None:
    """Parse an Ethernet frame carrying IPv4 and TCP; None for anything else."""
    if len(frame) < ETH_HEADER + 20 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = frame[ETH_HEADER:]
    header_length = (ip[0] & 0x0F) * 4
    (total_length,) = struct.unpack_from("!H", ip, 2)
    if ip[9] != IPPROTO_TCP:
        return None
    tcp = ip[header_length:total_length]
    source_port, destination_port = struct.unpack_from("!HH", tcp, 0)
    data_offset = (tcp[12] >> 4) * 4
    return Segment(
        (str(ipaddress.IPv4Address(ip[12:16])), source_port),
        (str(ipaddress.IPv4Address(ip[16:20])), destination_port),
        bytes(tcp[data_offset:]),
    )


def _packet_socket(interface: str) -> socket.socket:
    """Run inside the namespace: the socket, and the interface it binds, are its own."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER)
    sock.bind((interface, 0))
    return sock


class PacketCapture:
    """Every frame crossing one interface of a namespace, both ways, as tcpdump would.

    The socket exists from construction on, so nothing sent after that is missed; a
    thread drains it meanwhile. Leaving the `with` block stops the thread and takes what
    is still queued: a frame an app has received was queued here first.
    """

    def __init__(self, namespace: Namespace, interface: str) -> None:
        self._sock = namespace.call(_packet_socket, interface)
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="capture", daemon=True)
        self.frames: list[bytes] = []

    def __enter__(self) -> Self:
        self._reader.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._reader.join(TIMEOUT)
        self._sock.setblocking(False)
        try:
            while True:
                self.frames.append(self._sock.recv(FRAME_BUFFER))
        except BlockingIOError:
            pass
        finally:
            self._sock.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self._sock.recv(FRAME_BUFFER))
            except TimeoutError:
                continue

    @property
    def raw(self) -> bytes:
        return b"".join(self.frames)

    def flows(self) -> dict[tuple[Address, Address], bytes]:
        """The TCP payload of each direction of each connection, in capture order: what
        was split between segments reads whole here."""
        flows: dict[tuple[Address, Address], bytes] = defaultdict(bytes)
        for frame in self.frames:
            if (segment := tcp_segment(frame)) is not None:
                flows[segment.source, segment.destination] += segment.payload
        return dict(flows)

    def conversation(self, client: str, server: Address) -> tuple[bytes, bytes]:
        """What `client` sent to `server` and what came back, over all their connections."""
        flows = self.flows()
        sent = b"".join(p for (src, dst), p in flows.items() if src[0] == client and dst == server)
        back = b"".join(p for (src, dst), p in flows.items() if src == server and dst[0] == client)
        return sent, back


# --- the pods ------------------------------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "path": request.path,
            "marker": request.headers.get("x-marker"),
            "body": (await request.read()).decode(),
        }
    )


async def start_ratings_app() -> web.AppRunner:
    """b's app: answers any request with its path, its x-marker header and its body."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", APP_PORT).start()
    return runner


async def _ledger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read()  # to the client's half-close
    writer.write(b"ledger got: " + data)
    await writer.drain()
    writer.close()


async def start_ledger_app() -> asyncio.Server:
    """b's TCP app: reads to the end, answers with what it got."""
    return await asyncio.start_server(_ledger, "127.0.0.1", LEDGER_PORT)


async def start_controller(home: Path, manifests: str) -> Controller:
    controller = Controller(controller_config(home, discovery_host=A_ADDRESS))
    await controller.start()
    async with aiohttp.ClientSession() as session:
        api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
        status, body = await api.apply(manifests)
        assert status == 200, body
    return controller


@dataclass
class Pods:
    a: Namespace
    b: Namespace
    a_wire: str  # a's end of the veth pair
    a_loop: NamespaceLoop
    b_loop: NamespaceLoop
    home: Path
    controller: Controller | None = None
    sidecars: list[tuple[NamespaceLoop, ProxyServer]] = field(default_factory=list)

    def start_controller(self, manifests: str) -> None:
        self.controller = self.a_loop.run(start_controller(self.home, manifests), TIMEOUT)

    def sidecar(
        self, loop: NamespaceLoop, node: NodeInfo, *, secure: bool, **settings: Any
    ) -> ProxyServer:
        """Start a sidecar on `loop`; `secure`: with a join token, and wait for its SVID."""
        controller = self.controller
        assert controller is not None
        token = (
            controller.join_tokens.mint(node.namespace, node.service_account, 600).token
            if secure
            else None
        )
        proxy_settings = ProxySettings(
            node=node,
            controllers=[ControllerAddress(A_ADDRESS, controller.discovery_port)],
            trust_bundle=self.home / "ca" / "root.pem",
            admin=None,
            health=None,
            metrics=None,
            drain_seconds=1.0,
            **settings,
        )

        async def start() -> ProxyServer:
            proxy = ProxyServer(proxy_settings, join_token=token)
            self.sidecars.append((loop, proxy))
            await proxy.start()
            if secure:
                await eventually(lambda: proxy.core.svid is not None, what=f"{node.id}'s SVID")
            return proxy

        return loop.run(start(), TIMEOUT)

    def stop(self) -> None:
        for loop, proxy in reversed(self.sidecars):
            loop.run(proxy.stop(), TIMEOUT)
        if self.controller is not None:
            self.a_loop.run(self.controller.stop(), TIMEOUT)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Pods]:
    try:
        netns = NetnsLab()
    except NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    with netns:
        a = netns.namespace("a")
        b = netns.namespace("b")
        a_wire, _ = netns.link(a, A_ADDRESS, b, B_ADDRESS)
        with (
            a.event_loop(uvloop.new_event_loop) as a_loop,
            b.event_loop(uvloop.new_event_loop) as b_loop,
        ):
            app = b_loop.run(start_ratings_app())
            ledger = b_loop.run(start_ledger_app())
            pods = Pods(a, b, a_wire, a_loop, b_loop, tmp_path / "home")
            try:
                yield pods
            finally:
                pods.stop()
                b_loop.run(app.cleanup(), TIMEOUT)
                ledger.close()
    assert netns.leftovers() == [], "namespaces or links survived the test"


def start_mesh(pods: Pods, manifests: str, *, secure: bool) -> ProxyServer:
    """The controller, ratings' sidecar, productpage's sidecar; return ratings' sidecar
    once a request from productpage would go straight to its inbound listener."""
    pods.start_controller(manifests)
    server = pods.sidecar(
        pods.b_loop,
        NodeInfo(
            id="ratings-0",
            namespace="default",
            workload="ratings-0",
            labels={"app": "ratings"},
            address=B_ADDRESS,
            service_account="ratings",
        ),
        secure=secure,
        outbound=None,
        inbound_address=B_ADDRESS,
        app_address="127.0.0.1",
    )
    pods.b_loop.run(
        eventually(lambda: f"inbound:{APP_PORT}" in server.bound, what="ratings' inbound"),
        TIMEOUT,
    )
    client = pods.sidecar(
        pods.a_loop,
        NodeInfo(id="productpage-0", namespace="default", service_account="productpage"),
        secure=secure,
        outbound=ListenAddress("127.0.0.1", OUTBOUND_PORT),
        local_upstreams=[
            LocalUpstream(ListenAddress("127.0.0.1", LEDGER_LOCAL_PORT), "ledger", LEDGER_PORT)
        ],
    )
    pods.a_loop.run(_knows_ratings(client), TIMEOUT)
    return server


async def _knows_ratings(client: ProxyServer) -> None:
    await client.core.resolve("ratings")

    def ratings_endpoints() -> bool:
        endpoints = client.core.active.endpoints.get("ratings.default")
        return endpoints is not None and [(e.address, e.mtls) for e in endpoints.endpoints] == [
            (B_ADDRESS, True)  # registered by its sidecar: a proxy is in front
        ]

    await eventually(ratings_endpoints, what="productpage's endpoints of ratings")


def new_marker() -> str:
    return f"MARKER-{secrets.token_hex(16)}"


def app_request(marker: str) -> tuple[int, dict[str, str]]:
    """Run inside a: productpage's app calls ratings through its sidecar, the marker in
    the path, a header and the body; return the status and the echo (or the error)."""
    connection = http.client.HTTPConnection("127.0.0.1", OUTBOUND_PORT, timeout=TIMEOUT)
    try:
        connection.request(
            "POST",
            f"/echo/{marker}",
            body=f"the secret is {marker}".encode(),
            headers={"Host": "ratings", "x-marker": marker, "content-type": "text/plain"},
        )
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return response.status, {"error": body.decode(errors="replace")}
        return response.status, json.loads(body)
    finally:
        connection.close()


def app_tcp_exchange(marker: str) -> bytes:
    """Run inside a: the app talks to the ledger's TCP port through its sidecar."""
    with socket.create_connection(("127.0.0.1", LEDGER_LOCAL_PORT), timeout=TIMEOUT) as sock:
        sock.sendall(f"deposit {marker}".encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def captured_exchange(pods: Pods, marker: str) -> tuple[int, dict[str, str], PacketCapture]:
    with PacketCapture(pods.a, pods.a_wire) as capture:
        status, echo = pods.a.call(app_request, marker, timeout=TIMEOUT)
    return status, echo, capture


# --- the tests -----------------------------------------------------------------------------


def test_a_pod_to_pod_exchange_under_strict_mtls_shows_no_plaintext_on_the_wire(
    pods: Pods,
) -> None:
    ratings = start_mesh(pods, SERVICE + STRICT, secure=True)
    marker = new_marker()

    status, echo, capture = captured_exchange(pods, marker)

    # the exchange really happened, end to end, through mTLS
    assert status == 200, echo
    assert echo == {
        "path": f"/echo/{marker}",
        "marker": marker,
        "body": f"the secret is {marker}",
    }
    assert ratings.core.counters["mtls_connections"] >= 1
    # the capture saw it: a TLS handshake to ratings' inbound port, and answers back
    sent, answered = capture.conversation(A_ADDRESS, (B_ADDRESS, APP_PORT))
    assert sent[:1] == b"\x16", sent[:16]  # a TLS handshake record...
    assert sent[5:6] == b"\x01", sent[:16]  # ...that opens with a ClientHello
    assert TLS_APPLICATION_DATA in sent
    assert TLS_APPLICATION_DATA in answered
    # and nothing of it is readable: not in any frame, nor across segments of a stream
    assert marker.encode() not in capture.raw
    assert [flow for flow, payload in capture.flows().items() if marker.encode() in payload] == []


def test_the_same_exchange_without_svids_shows_the_marker_to_the_capture(pods: Pods) -> None:
    """The control: the capture does see plaintext when there is some."""
    ratings = start_mesh(pods, SERVICE, secure=False)
    marker = new_marker()

    status, echo, capture = captured_exchange(pods, marker)

    assert status == 200, echo
    assert echo["marker"] == marker
    assert ratings.core.counters["mtls_connections"] == 0
    sent, answered = capture.conversation(A_ADDRESS, (B_ADDRESS, APP_PORT))
    assert sent.startswith(f"POST /echo/{marker} HTTP/1.1".encode()), sent[:64]
    assert f"the secret is {marker}".encode() in sent
    assert answered.startswith(b"HTTP/1.1 200")
    assert marker.encode() in answered
    assert marker.encode() in capture.raw


def test_a_tcp_exchange_under_strict_mtls_shows_no_plaintext_either(pods: Pods) -> None:
    ratings = start_mesh(pods, SERVICE + STRICT, secure=True)
    pods.b_loop.run(
        eventually(lambda: f"inbound:{LEDGER_PORT}" in ratings.bound, what="the ledger's inbound"),
        TIMEOUT,
    )
    marker = new_marker()

    with PacketCapture(pods.a, pods.a_wire) as capture:
        answer = pods.a.call(app_tcp_exchange, marker, timeout=TIMEOUT)

    assert answer == f"ledger got: deposit {marker}".encode()
    sent, answered = capture.conversation(A_ADDRESS, (B_ADDRESS, LEDGER_PORT))
    assert sent[:1] == b"\x16", sent[:16]  # the relay's bytes went inside mTLS
    assert TLS_APPLICATION_DATA in answered
    assert marker.encode() not in capture.raw
    assert [flow for flow, payload in capture.flows().items() if marker.encode() in payload] == []
