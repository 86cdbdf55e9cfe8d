"""Transparent mode in real namespaces: an app with no proxy settings is still meshed.

Three namespaces on 198.18.0.0/15:
- node (198.18.1.1): the backends, an HTTP `reviews` app and an opaque `banner` server
  that speaks first;
- pod (198.18.1.2 towards node, 198.18.2.2 towards client): the controller on its
  loopback, the sidecar (a `ProxyServer` in transparent mode on the pod's event loop),
  and the pod's own HTTP app on 127.0.0.1:9080; nftables redirects the pod's outbound
  TCP to 15001 and TCP arriving from the client to 15006;
- client (198.18.2.1): calls the pod's service port from outside.

The pod's outbound rule exempts only what the proxy marks (SO_MARK, on its TCP relays
and its HTTP connection pools alike), so a routed HTTP answer proves the pools' marks
work; the app runs as another uid, as an app would.
Every namespace, and with them every link and rule, is deleted after the test.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import uvloop
from tests.support.apps import EchoApp
from tests.support.controller import Api, controller_config
from tests.support.netns import Namespace, NamespaceLoop, NetnsLab, NetnsUnavailable
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery.client import ControllerAddress
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, ProxySettings

pytestmark = pytest.mark.system

NODE_ADDRESS = "198.18.1.1"
POD_NODE_SIDE = "198.18.1.2"
CLIENT_ADDRESS = "198.18.2.1"
POD_ADDRESS = "198.18.2.2"
REVIEWS_VIP = "198.19.0.10"  # service addresses are virtual: no host has them
BANNER_VIP = "198.19.0.11"
APP_PORT = 9080
PROXY_MARK = 0x539
APP_UID = 1000  # the pod's calling app runs as someone else
TIMEOUT = 20.0  # seconds; everything here takes milliseconds, on-demand config ~1 s

POD_RULES = """
table ip {table} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{client_wire}" meta l4proto tcp counter redirect to :15006
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        meta mark {mark} counter return
        ip daddr 127.0.0.0/8 return
        meta l4proto tcp counter redirect to :15001
    }}
}}
"""

MANIFESTS = """
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: reviews}}
spec:
  selector: {{app: reviews}}
  vip: {reviews_vip}
  ports: [{{name: http, port: 9080, targetPort: {reviews_port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: reviews-0, labels: {{app: reviews}}}}
spec: {{address: {node}}}
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: banner}}
spec:
  selector: {{app: banner}}
  vip: {banner_vip}
  ports: [{{name: smtp, port: 2525, targetPort: {banner_port}, opaque: true}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: banner-0, labels: {{app: banner}}}}
spec: {{address: {node}}}
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: ratings}}
spec:
  selector: {{app: ratings}}
  ports: [{{name: http, port: {app_port}}}]
"""

# What the pod's app runs: standard library only, no proxy variables (env -i).
HTTP_GET = (
    "import sys, urllib.request\n"
    "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n"
)
BANNER_CHAT = (
    "import socket, sys\n"
    "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)\n"
    "f = s.makefile('rb')\n"
    "print(f.readline().decode().strip())\n"  # the server speaks first
    "s.sendall(b'HELO app\\r\\n')\n"
    "print(f.readline().decode().strip())\n"
)


@dataclass
class Lab:
    node: Namespace
    pod: Namespace
    client: Namespace
    pod_loop: NamespaceLoop
    proxy: ProxyServer

    def app(self, script: str, *args: str) -> str:
        """Run a Python snippet in the pod as the app: another uid, no environment."""
        return self.pod.run(
            "/usr/bin/env",
            "-i",
            "/usr/bin/setpriv",
            f"--reuid={APP_UID}",
            f"--regid={APP_UID}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
            *args,
        )


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 banner ready\r\n")
    await writer.drain()
    line = await reader.readline()
    writer.write(b"250 " + line)
    await writer.drain()
    writer.close()


async def start_node() -> tuple[EchoApp, asyncio.Server]:
    reviews = await EchoApp("reviews-0", NODE_ADDRESS).start()
    banner = await asyncio.start_server(_banner, NODE_ADDRESS, 0)
    return reviews, banner


async def stop_node(reviews: EchoApp, banner: asyncio.Server) -> None:
    await reviews.stop()
    banner.close()


@dataclass
class PodProcesses:
    controller: Controller
    app: EchoApp
    proxy: ProxyServer


async def start_pod(home: Path, manifests: str) -> PodProcesses:
    controller = Controller(controller_config(home))
    await controller.start()
    async with aiohttp.ClientSession() as session:
        api = Api(f"http://127.0.0.1:{controller.api_port}", controller.admin_token, session)
        status, body = await api.apply(manifests)
        assert status == 200, body
    app = await EchoApp("ratings-0", "127.0.0.1", APP_PORT).start()
    proxy = ProxyServer(
        ProxySettings(
            node=NodeInfo(
                id="ratings-0",
                namespace="default",
                workload="ratings-0",
                labels={"app": "ratings"},
                address=POD_ADDRESS,
                service_account="default",
            ),
            controllers=[ControllerAddress("127.0.0.1", controller.discovery_port)],
            trust_bundle=home / "ca" / "root.pem",
            mode="transparent",
            outbound=ListenAddress("0.0.0.0", 15001),
            inbound=ListenAddress("0.0.0.0", 15006),
            admin=ListenAddress("127.0.0.1", 0),
            health=ListenAddress("127.0.0.1", 0),
            metrics=ListenAddress("127.0.0.1", 0),
            drain_seconds=1.0,
            socket_mark=PROXY_MARK,
        )
    )
    await proxy.start()
    await eventually(
        lambda: APP_PORT in proxy.core.active.inbound_ports, timeout=TIMEOUT, what="inbound"
    )
    return PodProcesses(controller, app, proxy)


async def stop_pod(pod: PodProcesses) -> None:
    await pod.proxy.stop()
    await pod.app.stop()
    await pod.controller.stop()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    try:
        netns = NetnsLab()
    except NetnsUnavailable as exc:
        pytest.fail(f"system tests need root: {exc}", pytrace=False)
    with netns:
        node = netns.namespace("node")
        pod = netns.namespace("pod")
        client = netns.namespace("client")
        netns.link(node, NODE_ADDRESS, pod, POD_NODE_SIDE)
        _, client_wire = netns.link(client, CLIENT_ADDRESS, pod, POD_ADDRESS)
        # VIPs route like any remote address; the redirect then catches them
        pod.run("ip", "route", "add", "default", "via", NODE_ADDRESS)
        pod.apply_nftables(
            POD_RULES.format(
                table=f"{netns.prefix}_pod",
                client_wire=client_wire,
                mark=PROXY_MARK,
            )
        )
        with node.event_loop(uvloop.new_event_loop) as node_loop:
            reviews, banner = node_loop.run(start_node())
            banner_port = banner.sockets[0].getsockname()[1]
            try:
                manifests = MANIFESTS.format(
                    reviews_vip=REVIEWS_VIP,
                    reviews_port=reviews.port,
                    banner_vip=BANNER_VIP,
                    banner_port=banner_port,
                    node=NODE_ADDRESS,
                    app_port=APP_PORT,
                )
                with pod.event_loop(uvloop.new_event_loop) as pod_loop:
                    processes = pod_loop.run(start_pod(tmp_path / "home", manifests), TIMEOUT)
                    try:
                        yield Lab(node, pod, client, pod_loop, processes.proxy)
                    finally:
                        pod_loop.run(stop_pod(processes), TIMEOUT)
            finally:
                node_loop.run(stop_node(reviews, banner))
    assert netns.leftovers() == [], "namespaces or links survived the test"


def test_an_app_calling_a_service_vip_over_plain_http_gets_the_routed_answer(lab: Lab) -> None:
    answer = json.loads(lab.app(HTTP_GET, f"http://{REVIEWS_VIP}:9080/reviews/1"))
    assert answer["served_by"] == "reviews-0"
    assert answer["path"] == "/reviews/1"
    counters = lab.proxy.core.counter_values()
    assert counters["requests"] >= 1
    assert counters["on_demand_subscriptions"] >= 1  # the VIP was unknown until asked for
    assert counters.get("tcp_passthrough", 0) == 0


def test_an_opaque_service_reached_by_vip_greets_the_app_first(lab: Lab) -> None:
    assert lab.app(BANNER_CHAT, BANNER_VIP, "2525").splitlines() == [
        "220 banner ready",
        "250 HELO app",
    ]
    counters = lab.proxy.core.counters
    assert counters["tcp_connections"] == 1
    assert counters.get("tcp_passthrough", 0) == 0
    # the relay's upstream connection left with the proxy's mark, exempt from capture
    ruleset = lab.pod.run("nft", "list", "ruleset")
    marked = re.search(r"meta mark 0x0*539 counter packets (\d+)", ruleset)
    assert marked is not None, ruleset
    assert int(marked.group(1)) > 0


def test_an_address_no_service_has_is_passed_through(lab: Lab) -> None:
    port = lab.pod_loop.run(_reviews_port(lab.proxy))
    answer = json.loads(lab.app(HTTP_GET, f"http://{NODE_ADDRESS}:{port}/direct"))
    assert answer["served_by"] == "reviews-0"
    assert lab.proxy.core.counters["tcp_passthrough"] == 1


async def _reviews_port(proxy: ProxyServer) -> int:
    await proxy.core.resolve(REVIEWS_VIP)
    endpoints = proxy.core.active.endpoints["reviews.default"].endpoints
    return next(iter(endpoints[0].ports.values()))


def test_inbound_from_another_host_is_redirected_to_the_sidecar_and_reaches_the_app(
    lab: Lab,
) -> None:
    def call() -> dict[str, object]:
        with socket.create_connection((POD_ADDRESS, APP_PORT), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /stars HTTP/1.1\r\nhost: ratings\r\nconnection: close\r\n\r\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return json.loads(body)  # type: ignore[no-any-return]

    answer = lab.client.call(call, timeout=TIMEOUT)
    assert answer["served_by"] == "ratings-0"
    headers = answer["headers"]
    assert isinstance(headers, dict)
    assert headers["x-forwarded-for"] == CLIENT_ADDRESS  # the sidecar saw the caller
