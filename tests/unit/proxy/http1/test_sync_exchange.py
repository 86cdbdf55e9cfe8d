"""The synchronous exchange path, driven with in-memory transports: what it writes
upstream and downstream, and the default timeout that the core's sweep enforces."""

from __future__ import annotations

import time

from tests.support.wired_proxy import Wired

from mycelium.proxy.router.roles import SidecarInbound
from mycelium.proxy.routing import DEFAULT_TIMEOUT_SECONDS

RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 12\r\nConnection: keep-alive\r\n\r\n"
)


async def test_a_plain_exchange_forwards_both_heads_byte_for_byte() -> None:
    wired = Wired()
    request = b"GET /a?b=1 HTTP/1.1\r\nHost: backend\r\nUser-Agent: T/1\r\n\r\n"

    wired.downstream.data_received(request)
    assert wired.server.written == [request]
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")

    assert wired.client.written == [RESPONSE_HEAD + b"hello world\n"]  # one write
    assert wired.core.requests_sync == 1
    assert wired.core.requests == 1


async def test_hop_by_hop_fields_make_the_proxy_write_the_heads_itself() -> None:
    wired = Wired()

    wired.downstream.data_received(
        b"GET / HTTP/1.1\r\nHost: backend\r\nTE: trailers\r\nConnection: TE\r\n\r\n"
    )
    (sent,) = wired.server.written
    assert b"te:" not in sent.lower()
    assert b"connection" not in sent.lower()
    wired.upstream.data_received(
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
    )

    (answer,) = wired.client.written
    assert b"keep-alive" not in answer.lower()
    assert answer.endswith(b"content-length: 2\r\n\r\nok")


async def test_a_client_that_closes_gets_connection_close_not_the_raw_head() -> None:
    wired = Wired()

    wired.downstream.data_received(b"GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n")
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")

    (answer,) = wired.client.written
    assert b"connection: close\r\n" in answer
    assert b"Connection: keep-alive" not in answer
    assert wired.client.closed


async def test_a_response_head_overdue_past_the_default_timeout_is_a_504() -> None:
    wired = Wired()
    wired.downstream.data_received(b"GET /slow HTTP/1.1\r\nHost: backend\r\n\r\n")

    wired.downstream.check_timeouts(time.monotonic() + 1)
    assert wired.client.written == []  # not yet

    wired.downstream.check_timeouts(time.monotonic() + DEFAULT_TIMEOUT_SECONDS + 1)

    (answer,) = wired.client.written
    assert answer.startswith(b"HTTP/1.1 504 ")
    assert b"x-mycelium-reason: upstream_timeout" in answer
    assert wired.server.aborted  # that connection's late answer must not be taken
    assert wired.core.counters["reason_upstream_timeout"] == 1
    cluster = next(iter(wired.core.clusters))
    assert cluster.breaker.requests == 0
    assert cluster.endpoints[0].in_flight == 0


async def test_a_response_before_the_deadline_disarms_the_sweep() -> None:
    wired = Wired()
    wired.downstream.data_received(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")

    wired.downstream.check_timeouts(time.monotonic() + DEFAULT_TIMEOUT_SECONDS + 1)

    assert len(wired.client.written) == 1
    assert wired.core.counters["reason_upstream_timeout"] == 0


async def test_a_client_gone_while_its_request_waits_gives_the_attempt_up_at_once() -> None:
    wired = Wired()
    wired.downstream.data_received(b"GET /slow HTTP/1.1\r\nHost: backend\r\n\r\n")

    wired.downstream.connection_lost(None)

    assert wired.server.aborted  # mid-request: that connection cannot be reused
    assert wired.downstream not in wired.core.connections
    assert wired.core.counters["reason_client_reset"] == 1
    cluster = next(iter(wired.core.clusters))
    assert cluster.breaker.requests == 0
    assert cluster.endpoints[0].in_flight == 0
    # nothing left for the sweep to time out
    wired.downstream.check_timeouts(time.monotonic() + DEFAULT_TIMEOUT_SECONDS + 1)
    assert wired.core.counters["reason_upstream_timeout"] == 0


async def test_an_inbound_request_goes_at_once_with_the_hop_recorded() -> None:
    wired = Wired(role=SidecarInbound(8080))

    wired.downstream.data_received(b"GET /in HTTP/1.1\r\nHost: backend\r\n\r\n")

    (sent,) = wired.server.written
    assert sent.startswith(b"GET /in HTTP/1.1\r\n")
    assert b"x-forwarded-for: 127.0.0.1\r\n" in sent
    assert b"forwarded: for=127.0.0.1;proto=http;host=backend\r\n" in sent
    wired.upstream.data_received(RESPONSE_HEAD + b"hello world\n")
    assert wired.client.written == [RESPONSE_HEAD + b"hello world\n"]
    assert wired.core.requests_sync == 1
