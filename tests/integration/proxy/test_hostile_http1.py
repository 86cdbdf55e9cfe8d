"""Hostile HTTP/1.1 over real sockets: each bad input is refused with a status and a
reason, the offending connection closes, and a well-behaved client next to it is served
as if nothing happened."""

from __future__ import annotations

import asyncio

import pytest
from tests.support.proxy_mesh import ProxyMesh

from mycelium.proxy import core as proxy_core
from mycelium.proxy.http1 import downstream

GOOD = b"GET / HTTP/1.1\r\nHost: reviews\r\n\r\n"


async def send_raw(mesh: ProxyMesh, payload: bytes, *, timeout: float = 10.0) -> bytes:
    """Send bytes on a fresh connection; return everything received until the close."""
    address = mesh.caller.bound["outbound"]
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(payload)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_and_reason(response: bytes) -> tuple[int, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    reason = next(
        (line.split(":", 1)[1].strip() for line in head if line.lower().startswith("x-mycelium")),
        "",
    )
    return status, reason


async def still_serving(mesh: ProxyMesh) -> None:
    response = await mesh.get("/")
    assert response.status == 200


HOSTILE = {
    "content-length and transfer-encoding together": (
        b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        400,
        "request_smuggling",
    ),
    "two different content-lengths": (
        b"POST / HTTP/1.1\r\nHost: reviews\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        400,
        "request_smuggling",
    ),
    "a chunk size that is not hex": (
        b"POST / HTTP/1.1\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhi\r\n0\r\n\r\n",
        400,
        "bad_chunk",
    ),
    "obsolete line folding": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Folded: a\r\n b\r\n\r\n",
        400,
        "obsolete_line_folding",
    ),
    "a bare LF line ending": (b"GET / HTTP/1.1\nHost: reviews\n\n", 400, "bare_lf"),
    "a header name with a space": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\nBad Name: x\r\n\r\n",
        400,
        "bad_header_name",
    ),
    "a header section over 64 KiB": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        "header_too_large",
    ),
    "more than 100 headers": (
        b"GET / HTTP/1.1\r\nHost: reviews\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"\r\n",
        431,
        "too_many_headers",
    ),
    "transfer-encoding on HTTP/1.0": (
        b"POST / HTTP/1.0\r\nHost: reviews\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "request_smuggling",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
async def test_bad_requests_are_refused_and_others_are_served(
    proxy_mesh: ProxyMesh, case: str
) -> None:
    await still_serving(proxy_mesh)
    payload, expected_status, expected_reason = HOSTILE[case]
    response = await send_raw(proxy_mesh, payload)
    status, reason = status_and_reason(response)
    assert (status, reason) == (expected_status, expected_reason), response[:300]
    assert b"connection: close" in response.lower()
    # Nothing reached the app, and the neighbour is unaffected.
    assert not any("smuggled" in r["path"] for r in proxy_mesh.v1.seen + proxy_mesh.v2.seen)
    await still_serving(proxy_mesh)


async def test_a_flood_of_bad_connections_does_not_starve_good_ones(
    proxy_mesh: ProxyMesh,
) -> None:
    await still_serving(proxy_mesh)
    bad = HOSTILE["content-length and transfer-encoding together"][0]
    attackers = [asyncio.create_task(send_raw(proxy_mesh, bad)) for _ in range(200)]
    good = [asyncio.create_task(proxy_mesh.get("/")) for _ in range(50)]
    results = await asyncio.gather(*good)
    assert all(r.status == 200 for r in results)
    refused = await asyncio.gather(*attackers)
    assert all(status_and_reason(r)[0] == 400 for r in refused)


async def test_a_slow_request_head_is_cut_off(
    proxy_mesh: ProxyMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downstream, "HEADER_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(proxy_core, "SWEEP_INTERVAL_SECONDS", 0.1)
    address = proxy_mesh.caller.bound["outbound"]
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: rev")  # ...and never finish (slowloris)
    started = asyncio.get_running_loop().time()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert status_and_reason(response) == (408, "request_timeout")
    assert asyncio.get_running_loop().time() - started < 3
    await still_serving(proxy_mesh)


async def test_an_idle_keep_alive_connection_is_closed(
    proxy_mesh: ProxyMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(downstream, "IDLE_TIMEOUT_SECONDS", 0.5)
    monkeypatch.setattr(proxy_core, "SWEEP_INTERVAL_SECONDS", 0.1)
    address = proxy_mesh.caller.bound["outbound"]
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writer.write(GOOD)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    # Keep-alive, then silence: the proxy closes the connection by itself.
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest.endswith(b"}")  # the body of the first response, then EOF
    writer.close()
