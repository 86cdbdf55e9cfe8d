"""HTTP/1.1 callers reach HTTP/2 services and HTTP/2 callers reach HTTP/1.1 ones: the
port's protocol decides how the proxy speaks upstream, whatever the caller spoke.

Real clients and servers on loopback, the caller's sidecar between them: curl speaking
HTTP/1.1 to the h2c echo apps behind `reviews` (a port named `http2`) and to a grpcio
server behind `ratings` (a port named `grpc`); h2load and grpcio speaking HTTP/2 to
HTTP/1.1 servers (the aiohttp apps behind the proxy mesh's `reviews`, and a small
HTTP/1.1 server that answers a gRPC call in chunks with trailers).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from tests.support.h2_apps import GRPC_METHOD, H2Mesh, h2_mesh
from tests.support.proxy_mesh import ProxyMesh

__all__ = ["h2_mesh"]


async def curl(h2_mesh: H2Mesh, *args: str) -> subprocess.CompletedProcess[bytes]:
    host, port = h2_mesh.outbound
    result = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--http1.1", "-D", "-", *args, "--connect-to", f"::{host}:{port}"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result


async def test_an_http11_request_reaches_an_http2_service_as_a_stream(h2_mesh: H2Mesh) -> None:
    result = await curl(h2_mesh, "-d", "ping", "http://reviews:9080/hello?x=1")

    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == b"ping"  # the echo app sends the body back
    seen = [*h2_mesh.v1.seen, *h2_mesh.v2.seen]
    assert [(r["method"], r["path"]) for r in seen] == [("POST", "/hello?x=1")]
    assert seen[0]["authority"] == "reviews:9080"  # the Host became :authority


async def test_an_http2_responses_trailers_reach_an_http11_client_in_the_last_chunk(
    h2_mesh: H2Mesh,
) -> None:
    result = await curl(h2_mesh, "http://reviews:9080/t?size=5&trailers=smuggle")

    text = result.stdout.lower()
    assert text.startswith(b"http/1.1 200")
    assert b"transfer-encoding: chunked" in text
    assert b"x-trailer-bytes: 5" in text
    assert b"grpc-status: 0" in text
    # what a trailer must not carry never reaches the client
    assert b"set-cookie" not in text
    assert b"location" not in text


async def test_curl_over_http11_calls_a_grpc_server(h2_mesh: H2Mesh) -> None:
    message = b"from curl"
    framed = struct.pack(">BI", 0, len(message)) + message  # gRPC's length-prefixed message
    result = await _grpc_over_http11(h2_mesh, framed)

    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: application/grpc" in head.lower()
    assert b"hello from curl" in body
    assert b"grpc-status: 0" in body.lower()  # the status trailer, in the last chunk
    assert h2_mesh.grpc_server.calls  # grpcio served it


async def _grpc_over_http11(h2_mesh: H2Mesh, framed: bytes) -> subprocess.CompletedProcess[bytes]:
    host, port = h2_mesh.outbound
    command = [
        "curl", "-sS", "--http1.1", "-D", "-", "--raw",
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "--data-binary", "@-", "--connect-to", f"::{host}:{port}",
        f"http://ratings:9090{GRPC_METHOD}",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, input=framed, capture_output=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result


# --- HTTP/2 callers, HTTP/1.1 services ----------------------------------------------------


async def test_h2load_reaches_an_http11_service(proxy_mesh: ProxyMesh, tmp_path: Path) -> None:
    addr = proxy_mesh.caller.bound["outbound"]
    (tmp_path / "body").write_bytes(b"abc")
    command = [
        "h2load", "-n", "200", "-c", "2", "-m", "10", "-H", ":authority: reviews:9080",
        "-d", str(tmp_path / "body"), f"http://{addr.host}:{addr.port}/load",
    ]  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    output = result.stdout.decode()
    assert "200 succeeded, 0 failed, 0 errored" in output, output
    assert "status codes: 200 2xx" in output, output
    seen = [*proxy_mesh.v1.seen, *proxy_mesh.v2.seen]
    assert len(seen) == 200
    assert {(r["method"], r["version"], r["body_bytes"]) for r in seen} == {("POST", "1.1", 3)}
    assert {r["headers"]["host"] for r in seen} == {"reviews:9080"}  # :authority became Host


async def test_grpcio_reaches_an_http11_server_and_its_chunked_trailers_come_back(
    proxy_mesh: ProxyMesh,
) -> None:
    async with http11_grpc_server() as (port, heads):
        await proxy_mesh.apply(GRPC_OVER_HTTP11.format(port=port))
        addr = proxy_mesh.caller.bound["outbound"]
        options = [("grpc.default_authority", "legacy:9400"), ("grpc.enable_http_proxy", 0)]

        def call() -> tuple[bytes, tuple[tuple[str, str], ...]]:
            with grpc.insecure_channel(f"{addr.host}:{addr.port}", options=options) as channel:
                say = channel.unary_unary(GRPC_METHOD)
                reply, state = say.with_call(b"over one", timeout=10)
                return reply, tuple(state.trailing_metadata())

        reply, trailers = await asyncio.to_thread(call)
    assert reply == b"hello over one"
    assert ("x-app-trailer", "chunked") in trailers
    (head,) = heads
    assert head.startswith(f"POST {GRPC_METHOD} HTTP/1.1\r\n".encode())
    assert b"\r\nhost: legacy:9400\r\n" in head.lower()
    assert b"\r\nte: trailers" not in head.lower()  # hop-by-hop in HTTP/1.1


GRPC_OVER_HTTP11 = """
---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: legacy}}
spec:
  selector: {{app: legacy}}
  ports: [{{name: http, port: 9400, targetPort: {port}}}]
---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: legacy-v1, labels: {{app: legacy}}}}
spec: {{address: 127.0.0.14}}
"""


@contextlib.asynccontextmanager
async def http11_grpc_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An HTTP/1.1 server answering one gRPC call: a length-prefixed message in a
    chunked body, its status in the trailers of the last chunk."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        body = b""
        if b"transfer-encoding: chunked" in head.lower():
            while (size := int((await reader.readline()).strip(), 16)) > 0:
                body += await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")  # the last chunk's (empty) trailers
        else:
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        message = b"hello " + body[5:].split(b"\r\n")[0]
        framed = struct.pack(">BI", 0, len(message)) + message
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(framed), framed)
            + b"0\r\ngrpc-status: 0\r\nx-app-trailer: chunked\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.14", 0)
    try:
        yield server.sockets[0].getsockname()[1], heads
    finally:
        server.close()
        await server.wait_closed()
