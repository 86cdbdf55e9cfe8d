"""The ingress gateway end to end: a gateway proxy on its own loopback address takes
curl's requests for the Gateway's listeners and routes them, through mTLS with its own
SVID, to services behind real sidecars; all of it configured through the controller."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.apps import EchoApp
from tests.support.metrics_scrape import scrape
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh, free_port_on, serving_sidecar, sidecar

from mycelium.proxy.listeners.server import ProxyServer

GATEWAY_ADDRESS = "127.0.0.30"

SERVICE = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 9080, targetPort: {port}}}]
"""

# The backends' sidecars accept the mesh's mTLS only.
STRICT = """---
apiVersion: mycelium.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
"""

ROUTES = """---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: site}
spec:
  parentRefs: [{kind: Gateway, name: public}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /ratings}}]
    backendRefs: [{name: ratings}]
  - matches: [{path: {type: PathPrefix, value: /details}}]
    backendRefs: [{name: details}]
  - matches: [{path: {type: PathPrefix, value: /reviews}}]
    backendRefs: [{name: reviews, subset: v1, weight: 3}, {name: reviews, subset: v2, weight: 1}]
"""


def gateway(http: int, shop: int, https: int, certificate: str = "", key: str = "") -> str:
    listeners = [
        f"{{name: http, port: {http}, protocol: HTTP}}",
        f"{{name: shop, port: {shop}, protocol: HTTP, hostname: shop.example.com}}",
    ]
    if certificate:
        listeners.append(
            f"{{name: https, port: {https}, protocol: HTTPS, hostname: shop.example.com, "
            f"tls: {{certificateFile: {certificate}, keyFile: {key}}}}}"
        )
    return f"""---
apiVersion: mycelium.io/v1
kind: Gateway
metadata: {{name: public}}
spec:
  selector: {{app: ingress}}
  listeners: [{", ".join(listeners)}]
"""


@dataclass
class Edge:
    mesh: ProxyMesh
    gateway: ProxyServer
    ratings: EchoApp
    details: EchoApp
    ports: tuple[int, int, int]  # http, shop (hostname), https
    access_log: Path
    tls_dir: Path

    async def apply(self, *texts: str) -> None:
        services = "".join(
            SERVICE.format(name=app.name, port=app.port) for app in (self.ratings, self.details)
        )
        await self.mesh.apply(services + STRICT + "".join(texts))

    async def configure(self, *texts: str) -> None:
        """Apply, and wait until the gateway holds a config that has every listener."""
        before = self.gateway.core.active.version
        await self.apply(*texts)
        await eventually(lambda: self.gateway.core.active.version != before, what="a push")


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-D", "-", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


async def acurl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """curl in a thread: the status, the (last) response's headers and the body."""
    result = await asyncio.to_thread(curl, *args)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def make_certificates(directory: Path) -> None:
    """A CA, and a certificate for shop.example.com that it signed (ca.pem, cert.pem,
    key.pem), plus a key that matches nothing (other-key.pem)."""
    now = dt.datetime.now(dt.UTC)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test edge CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("shop.example.com")]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key_pem(key))
    (directory / "other-key.pem").write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))


@asynccontextmanager
async def backend(mesh: ProxyMesh, name: str, address: str) -> AsyncIterator[EchoApp]:
    app = await EchoApp(name, "127.0.0.1").start()
    await mesh.apply(SERVICE.format(name=name, port=app.port))
    try:
        async with serving_sidecar(mesh, f"{name}-0", address, app=name):
            yield app
    finally:
        await app.stop()


@pytest.fixture
async def edge(proxy_mesh: ProxyMesh, tmp_path: Path) -> AsyncIterator[Edge]:
    mesh = proxy_mesh
    http, shop, https = (free_port_on(GATEWAY_ADDRESS) for _ in range(3))
    access_log = tmp_path / "gateway-access.log"
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    make_certificates(tls_dir)
    async with (
        backend(mesh, "ratings", "127.0.0.21") as ratings,
        backend(mesh, "details", "127.0.0.22") as details,
        sidecar(
            mesh,
            "ingress-0",
            role="gateway",
            workload="ingress-0",
            labels={"app": "ingress"},
            address=GATEWAY_ADDRESS,
            gateway_address=GATEWAY_ADDRESS,
            service_account="ingress",
            outbound=None,
            access_log=str(access_log),
        ) as gateway_proxy,
    ):
        edge = Edge(mesh, gateway_proxy, ratings, details, (http, shop, https), access_log, tls_dir)
        await edge.configure(gateway(http, shop, https), ROUTES)
        await eventually(
            lambda: {f"gateway:{http}", f"gateway:{shop}"} <= set(gateway_proxy.bound),
            what="the gateway's listeners",
        )
        yield edge


def url(port: int, path: str) -> str:
    return f"http://{GATEWAY_ADDRESS}:{port}{path}"


async def test_http_requests_are_routed_by_path_over_mtls_to_strict_backends(edge: Edge) -> None:
    http = edge.ports[0]
    status, headers, body = await acurl(url(http, "/ratings/5"))
    assert status == 200, body
    assert json.loads(body)["served_by"] == "ratings"
    status, _, body = await acurl(url(http, "/details/7"))
    assert status == 200, body
    record = edge.details.seen[-1]
    assert record["path"] == "/details/7"
    # the backend's sidecar ended the gateway's mTLS and vouches for its identity
    assert "spiffe://cluster.local/ns/default/sa/ingress" in record["headers"].get(
        "x-forwarded-client-cert", ""
    )
    status, headers, _ = await acurl(url(http, "/nowhere"))
    assert (status, headers["x-mycelium-reason"]) == (404, "no_route")
    # counters and the access log work at the gateway as at a sidecar
    assert edge.gateway.core.requests >= 3

    def logged() -> list[dict[str, object]]:
        edge.gateway.core.access_log.flush()  # type: ignore[union-attr]
        return [json.loads(line) for line in edge.access_log.read_text().splitlines()]

    entries = await eventually(logged, what="access log lines")
    ratings = next(e for e in entries if e["path"] == "/ratings/5")
    assert ratings["direction"] == "gateway"
    assert ratings["service"] == "default/public/http"
    assert ratings["rule"] == "default/site#0"
    assert ratings["upstream_cluster"] == "ratings.default"
    # ...and its metrics name the backend's service, as Istio's gateways do
    samples = (await scrape(edge.gateway))["istio_requests_total"]
    services = {s.labels["destination_service"] for s in samples}
    assert "ratings.default.svc.cluster.local" in services
    assert all(s.labels["reporter"] == "source" for s in samples)


async def test_a_hostname_listener_refuses_other_hosts_with_404(edge: Edge) -> None:
    shop = edge.ports[1]
    status, _, body = await acurl("-H", "Host: shop.example.com", url(shop, "/ratings"))
    assert status == 200, body
    status, headers, body = await acurl("-H", "Host: other.example.com", url(shop, "/ratings"))
    assert status == 404
    assert headers["x-mycelium-reason"] == "unknown_host"
    assert b"'other.example.com'" in body
    # HTTP/2 (prior knowledge) is routed the same way
    status, headers, _ = await acurl(
        "--http2-prior-knowledge", "-H", "Host: other.example.com", url(shop, "/ratings")
    )
    assert (status, headers["x-mycelium-reason"]) == (404, "unknown_host")


async def test_https_terminates_with_the_operators_certificate(edge: Edge) -> None:
    http, shop, https = edge.ports
    tls = edge.tls_dir
    await edge.configure(gateway(http, shop, https, f"{tls}/cert.pem", f"{tls}/key.pem"), ROUTES)
    await eventually(lambda: f"gateway:{https}" in edge.gateway.bound, what="the HTTPS listener")
    resolve = f"shop.example.com:{https}:{GATEWAY_ADDRESS}"
    target = f"https://shop.example.com:{https}/ratings/1"
    # curl asks for HTTP/2 by default; the gateway's ALPN answers HTTP/1.1
    status, _, body = await acurl("--cacert", f"{tls}/ca.pem", "--resolve", resolve, target)
    assert status == 200, body
    assert json.loads(body)["served_by"] == "ratings"
    # a server name no listener serves: refused during the handshake
    other = f"other.example.com:{https}:{GATEWAY_ADDRESS}"
    result = await asyncio.to_thread(
        curl, "-k", "--resolve", other, f"https://other.example.com:{https}/ratings"
    )
    assert result.returncode != 0
    assert edge.gateway.core.counters["refused_gateway_unknown_sni"] >= 1
    # the right server name but another Host: the listener's hostname decides, 404
    status, headers, _ = await acurl(
        "--cacert", f"{tls}/ca.pem", "--resolve", resolve, "-H", "Host: other.example.com", target
    )
    assert (status, headers["x-mycelium-reason"]) == (404, "unknown_host")


async def test_weights_at_the_gateway_split_the_traffic(edge: Edge) -> None:
    http = edge.ports[0]
    session = edge.mesh.session
    served = []
    for _ in range(200):
        async with session.get(url(http, "/reviews")) as response:
            assert response.status == 200
            served.append(response.headers["x-served-by"])
    v1 = served.count("reviews-v1")
    assert v1 + served.count("reviews-v2") == 200
    assert 120 <= v1 <= 180, v1  # 3:1 is 150 of 200


async def test_an_unusable_certificate_file_is_nacked_and_the_old_config_serves(
    edge: Edge,
) -> None:
    http, shop, https = edge.ports
    tls = edge.tls_dir
    session = edge.mesh.controller.discovery.sessions["ingress-0"]
    for certificate, key, named in [
        (f"{tls}/missing.pem", f"{tls}/key.pem", f"{tls}/missing.pem"),
        (f"{tls}/cert.pem", f"{tls}/other-key.pem", f"{tls}/other-key.pem"),
    ]:
        held = edge.gateway.core.active.version
        await edge.apply(gateway(http, shop, https, certificate, key), ROUTES)
        await eventually(lambda: session.last_nack is not None, what="a NACK")
        assert session.last_nack is not None
        reason = session.last_nack[1]
        assert "default/public/https" in reason
        assert named in reason
        assert edge.gateway.core.active.version == held
        assert f"gateway:{https}" not in edge.gateway.bound
        status, _, _ = await acurl(url(http, "/ratings"))
        assert status == 200
        session.last_nack = None  # so the next round waits for its own
