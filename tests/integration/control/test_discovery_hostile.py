"""The discovery port under hostile clients, over real TLS sockets: every attack is
refused with its reason counted, the attacker's stream survives where the protocol
allows, and a well-behaved proxy beside it still gets a pushed change within a second
(checked after every story by the `neighbour` fixture, and during the longer ones).

The limits are the production ones except the deadline and the caps, made small so
that each story runs in a second or two."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from tests.support.controller import Mesh, running_mesh
from tests.support.discovery_peer import RawPeer, WatchedProxy, watched_proxy
from tests.support.finished import tap_event
from tests.support.metrics_scrape import scrape_controller, value
from tests.support.polling import eventually

from mycelium.control.compiler.roles import ROLE_BUNDLES, NotCompiled
from mycelium.control.config import DiscoveryLimits
from mycelium.control.tap import ActiveTap
from mycelium.discovery import protocol as p

LIMITS = DiscoveryLimits(
    hello_seconds=1.0, unauthenticated=24, unauthenticated_per_address=6, unread_bytes=64 * 1024
)


# No rate limit: a proxy sending at its rate would take minutes to fill the kernel's
# buffers with answers it does not read.
UNLIMITED = replace(LIMITS, messages_per_second=1e9, message_burst=10**9)


@pytest.fixture
async def mesh(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Mesh]:
    limits = getattr(request, "param", LIMITS)
    # Production's heartbeat: the raw peers do not heart-beat, and a pause on a busy
    # machine must not make them look gone.
    async with running_mesh(
        tmp_path / "home", discovery_limits=limits, heartbeat_seconds=5.0, lease_ttl_seconds=15.0
    ) as mesh:
        yield mesh


@pytest.fixture
async def watched(mesh: Mesh) -> WatchedProxy:
    return await watched_proxy(mesh)


@pytest.fixture(autouse=True)
async def neighbour(watched: WatchedProxy) -> AsyncIterator[None]:
    """After each story, the well-behaved proxy still gets a change within a second."""
    yield
    await assert_still_served(watched)


def refusals(mesh: Mesh) -> dict[str, int]:
    return dict(mesh.controller.discovery.refusals.counts)


async def connect(mesh: Mesh, source: str = "127.0.0.1", **kwargs: object) -> RawPeer:
    return await RawPeer.connect(
        mesh.controller.discovery_port,
        mesh.home / "ca" / "root.pem",
        source=source,
        **kwargs,  # type: ignore[arg-type]
    )


async def assert_still_served(watched: WatchedProxy) -> None:
    latency = await watched.push_latency()
    assert latency < 1.0, f"the well-behaved proxy waited {latency:.3f} s for a push"


# --- before authentication -------------------------------------------------------------


async def test_a_first_frame_bigger_than_a_hello_is_refused_before_it_is_read(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    peer = await connect(mesh)
    peer.send_raw(p.MAX_FRAME_BYTES.to_bytes(4, "big") + b"x" * 65536)
    refusal = await peer.next_of(p.Refusal)
    assert f"a hello is at most {p.MAX_HELLO_BYTES}" in refusal.message
    assert await peer.closed()
    assert refusals(mesh)["hello_too_large"] == 1
    await assert_still_served(watched)


@pytest.mark.parametrize(
    ("payload", "reason", "said"),
    [
        (b"{nope", "malformed_hello", "malformed message from proxy"),
        (b'{"type":"hello","node":{"id":"x","labels":["a"]}}', "malformed_hello", "labels"),
        (b'{"type":"teleport","to":"mars"}', "malformed_hello", "teleport"),
        (msgspec.json.encode(p.Heartbeat()), "not_hello", "must be a hello, not heartbeat"),
        (b"[]", "malformed_hello", "malformed"),
    ],
)
async def test_a_first_message_that_is_no_valid_hello_is_refused(
    mesh: Mesh, payload: bytes, reason: str, said: str
) -> None:
    peer = await connect(mesh)
    peer.send_payload(payload)
    refusal = await peer.next_of(p.Refusal)
    assert said in refusal.message
    assert await peer.closed()
    assert refusals(mesh) == {reason: 1}


async def test_a_truncated_hello_and_a_silent_peer_are_cut_at_the_deadline(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    truncated = await connect(mesh)
    truncated.send_raw((200).to_bytes(4, "big") + b'{"type":"hello"')
    silent = await connect(mesh)
    started = time.monotonic()
    assert await truncated.closed(timeout=3)
    assert await silent.closed(timeout=3)
    assert 0.8 < time.monotonic() - started < 2.5
    assert refusals(mesh) == {"hello_timeout": 2}
    await assert_still_served(watched)


async def test_a_peer_that_never_finishes_its_tls_handshake_is_cut(mesh: Mesh) -> None:
    peer = await connect(mesh, tls=False)
    peer.send_raw(b"\x16\x03\x01\x00\xff")  # a TLS record header, and then nothing
    assert await peer.closed(timeout=3)
    assert refusals(mesh) == {"handshake_timeout": 1}


async def test_plaintext_where_tls_is_expected_is_refused(mesh: Mesh) -> None:
    peer = await connect(mesh, tls=False)
    peer.send(p.Hello(node=p.NodeInfo(id="plain-0")))
    assert await peer.closed(timeout=3)
    assert refusals(mesh) == {"tls_failed": 1}


async def test_a_flood_of_silent_connections_from_one_address_leaves_room_for_others(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    flood = [await connect(mesh, source="127.0.0.2", tls=False) for _ in range(10)]
    await eventually(
        lambda: refusals(mesh).get("too_many_from_address") == 4, what="the per-address cap"
    )
    assert mesh.controller.discovery.unauthenticated_connections == 6
    # A new proxy from another address still gets in, and the watched one is served.
    newcomer = await connect(mesh, source="127.0.0.3")
    await newcomer.hello("newcomer-0")
    await assert_still_served(watched)
    for peer in flood:
        peer.close()
    newcomer.close()


async def test_a_flood_from_many_addresses_is_held_to_the_total(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    flood = [
        await connect(mesh, source=f"127.0.1.{i}", tls=False)
        for i in range(1, 31)  # 30 addresses, a connection each: 24 places
    ]
    await eventually(lambda: refusals(mesh).get("too_many_connections") == 6, what="the total cap")
    await assert_still_served(watched)  # an authenticated stream is not affected
    await eventually(
        lambda: mesh.controller.discovery.unauthenticated_connections == 0,
        timeout=3,
        what="the deadline to empty the places",
    )
    latecomer = await connect(mesh, source="127.0.2.1")
    await latecomer.hello("latecomer-0")  # the places are free again
    for peer in flood:
        peer.close()
    latecomer.close()


async def test_maximal_frames_from_many_connections_cost_a_hello_each(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    peers = [await connect(mesh, source=f"127.0.3.{i}") for i in range(1, 21)]
    chunk = b"\0" * 256 * 1024
    for peer in peers:
        peer.send_raw(p.MAX_FRAME_BYTES.to_bytes(4, "big") + chunk)
    await assert_still_served(watched)
    for peer in peers:
        assert await peer.closed()
    assert refusals(mesh) == {"hello_too_large": 20}


# --- after authentication ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "refused", "reason"),
    [
        (b"{nope", "", "malformed"),
        (b'{"type":"teleport"}', "", "malformed"),
        (b'{"type":"ack","nonce":"one","version":"v"}', "", "malformed"),
        (b'{"type":"subscribe","add":"reviews"}', "", "malformed"),
        (b'{"type":"heartbeat"' + b" " * 4096 + b"}", "heartbeat", "message_too_large"),
        (msgspec.json.encode(p.Hello(node=p.NodeInfo(id="again"))), "hello", "second_hello"),
        (msgspec.json.encode(p.Resume()), "resume", "second_resume"),
    ],
)
async def test_a_bad_message_on_a_live_stream_is_refused_and_the_stream_goes_on(
    mesh: Mesh, payload: bytes, refused: str, reason: str
) -> None:
    peer = await connect(mesh)
    await peer.hello("sloppy-0")
    peer.send_payload(payload)
    answer = await peer.next_of(p.MessageRefused)
    assert (answer.refused, answer.reason) == (refused, reason)
    assert await peer.still_answers()
    assert refusals(mesh) == {reason: 1}
    assert "sloppy-0" in mesh.controller.discovery.sessions


async def test_a_frame_larger_than_any_message_is_skipped_and_the_stream_goes_on(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    peer = await connect(mesh)
    await peer.hello("heavy-0")
    size = p.MAX_CLIENT_FRAME_BYTES + 1
    peer.send_raw(size.to_bytes(4, "big") + b"\0" * size)
    answer = await peer.next_of(p.MessageRefused)
    assert answer.reason == "message_too_large"
    assert f"a frame of {size} bytes" in answer.message
    assert await peer.still_answers()
    await assert_still_served(watched)


async def test_the_message_after_the_hello_must_be_a_resume(mesh: Mesh) -> None:
    peer = await connect(mesh)
    peer.send(p.Hello(node=p.NodeInfo(id="impatient-0")), p.Subscribe(add=["reviews"]))
    refusal = await peer.next_of(p.Refusal)
    assert "must be a resume, not subscribe" in refusal.message
    assert await peer.closed()
    assert refusals(mesh) == {"no_resume": 1}


@pytest.mark.parametrize(
    "role", sorted(role for role, plan in ROLE_BUNDLES.items() if isinstance(plan, NotCompiled))
)
async def test_a_role_without_a_bundle_compiler_is_refused_by_name(mesh: Mesh, role: str) -> None:
    # Today that is ambient's roles: given a sidecar's config they would run the wrong one.
    peer = await connect(mesh)
    peer.send(p.Hello(node=p.NodeInfo(id=f"{role}-0", role=role)))  # type: ignore[arg-type]
    refusal = await peer.next_of(p.Refusal)
    assert f"no config for proxies in the '{role}' role" in refusal.message
    assert await peer.closed()
    assert refusals(mesh) == {"unsupported_role": 1}
    assert f"{role}-0" not in mesh.controller.discovery.sessions


async def test_a_message_flood_is_read_at_the_stream_rate(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    peer = await connect(mesh)
    await peer.hello("chatty-0")
    limits = mesh.controller.discovery.limits
    flood = limits.message_burst + 300  # 300 past the burst: three seconds at the rate
    peer.send(*([p.Heartbeat()] * flood))
    await assert_still_served(watched)
    await eventually(lambda: refusals(mesh).get("throttled", 0) >= 1, what="throttling")
    echoes = 0
    async with asyncio.timeout(10):
        while echoes < flood:
            await peer.next_of(p.Heartbeat)
            echoes += 1
    assert await peer.still_answers()  # slowed down, not cut


@pytest.mark.parametrize("mesh", [UNLIMITED], indirect=True)
async def test_a_proxy_that_never_reads_is_cut_off_instead_of_buffered(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    peer = await connect(mesh, receive_buffer=4096)
    await peer.hello("deaf-0")
    # Each heartbeat is answered; the answers pile up unread in the kernel's buffers,
    # then in the controller's, until it stops buffering for this proxy.
    batch = b"".join(p.encode(p.Heartbeat()) for _ in range(1000))
    with contextlib.suppress(ConnectionError):  # the cut, seen from this side
        async with asyncio.timeout(30):
            while "slow_reader" not in refusals(mesh):
                peer.send_raw(batch)
                await peer.writer.drain()
    await eventually(lambda: "slow_reader" in refusals(mesh), what="the cut")
    assert "deaf-0" not in mesh.controller.discovery.sessions
    await assert_still_served(watched)


async def test_subscriptions_stop_at_the_limit(mesh: Mesh) -> None:
    peer = await connect(mesh)
    await peer.hello("greedy-0")
    names = [f"svc-{i}.default" for i in range(p.MAX_SUBSCRIPTIONS)]
    peer.send(p.Subscribe(add=names[:1000]), p.Subscribe(add=[*names[1000:], "one-more", "two"]))
    answer = await peer.next_of(p.MessageRefused)
    assert answer.reason == "subscription_limit"
    assert "2 of the 26 services asked for are over the limit of 1024" in answer.message
    session = mesh.controller.discovery.sessions["greedy-0"]
    assert len(session.subscriptions) == p.MAX_SUBSCRIPTIONS
    assert "one-more" not in session.subscriptions


# --- telemetry ----------------------------------------------------------------------------


def row(source: str, destination: str, service: str, requests: int = 10) -> p.TrafficRow:
    return p.TrafficRow(
        source_workload=source,
        source_workload_namespace="shop",
        destination_service=service,
        destination_workload=destination,
        destination_workload_namespace="shop",
        route="",
        protocol="http",
        mtls=True,
        requests=requests,
        errors=0,
        latency_buckets=[requests] + [0] * len(p.LATENCY_BUCKETS_MS),
    )


async def test_telemetry_is_believed_only_about_its_reporter(mesh: Mesh) -> None:
    peer = await connect(mesh)
    await peer.hello("cart-0", namespace="shop", workload="cart-0")
    peer.send(
        p.TelemetryReport(
            rows=[
                row("cart-0", "payments-0", "payments.shop"),  # its own call: believed
                row("orders-0", "cart-0", "cart.shop"),  # a call it served: believed
                row("orders-0", "payments-0", "payments.shop", 9999),  # others': forged
            ]
        )
    )
    answer = await peer.next_of(p.MessageRefused)
    assert answer.reason == "telemetry_not_reporter"
    assert "1 of 3 rows" in answer.message
    edges = mesh.controller.discovery.traffic.edges(time.time(), 60)
    assert sorted((key[0], key[3]) for key in edges) == [
        ("cart-0", "payments-0"),
        ("orders-0", "cart-0"),
    ]
    assert mesh.controller.discovery.traffic_rows_refused == {"not_reporter": 1}
    samples = await scrape_controller(mesh.controller)
    refused_rows = "mycelium_controller_traffic_rows_refused_total"
    assert value(samples, refused_rows, reason="not_reporter") == 1
    refused = "mycelium_controller_discovery_refusals_total"
    assert value(samples, refused, reason="telemetry_not_reporter") == 1


async def test_invented_destinations_stop_at_the_series_limit_per_proxy(mesh: Mesh) -> None:
    peer = await connect(mesh)
    await peer.hello("spray-0", namespace="shop", workload="spray-0")
    invented = [row("spray-0", f"w{i}", f"s{i}.shop") for i in range(600)]
    peer.send(p.TelemetryReport(rows=invented[:400]), p.TelemetryReport(rows=invented[400:]))
    answer = await peer.next_of(p.MessageRefused)
    assert answer.reason == "traffic_series_limit"
    traffic = mesh.controller.discovery.traffic
    assert traffic.live_series == 500
    assert mesh.controller.discovery.traffic_rows_refused == {"series_limit": 100}
    # Another proxy still has room of its own.
    other = await connect(mesh)
    await other.hello("honest-0", namespace="shop", workload="honest-0")
    other.send(p.TelemetryReport(rows=[row("honest-0", "cart-0", "cart.shop")]))
    assert await other.still_answers()
    assert traffic.live_series == 501


async def test_tap_events_beyond_the_taps_rate_are_refused(mesh: Mesh) -> None:
    peer = await connect(mesh)
    await peer.hello("tapped-0", workload="tapped-0")
    node = mesh.controller.discovery.sessions["tapped-0"].node
    start = p.TapStart(id="t-1", seconds=30, rate=10)
    tap = ActiveTap(start, [node])
    mesh.controller.discovery.start_tap(start, [node.id], tap)
    assert await peer.next_of(p.TapStart) == start
    batch = p.TapEvents(id="t-1", events=[tap_event()] * p.MAX_TAP_BATCH)
    peer.send(batch, batch)  # 400 events for a tap of 10 a second
    answer = await peer.next_of(p.MessageRefused)
    assert answer.reason == "tap_over_rate"
    assert tap.sent == 10 + p.MAX_TAP_BATCH  # a second's worth, plus a batch in flight
    assert tap.lines.qsize() == tap.sent  # the relay holds no more than that


# --- generated input -------------------------------------------------------------------


async def test_mutated_messages_never_end_a_stream_or_harm_a_neighbour(
    mesh: Mesh, watched: WatchedProxy
) -> None:
    """Valid messages of every kind, mutated byte by byte (a seeded fuzzer: each
    mutation is a frame the controller must refuse or accept, never crash on)."""
    import random

    rng = random.Random(1307)
    seeds = [
        msgspec.json.encode(m)
        for m in (
            p.Ack(nonce=1, version="v"),
            p.Nack(nonce=1, version="v", reason="bad"),
            p.Subscribe(add=["reviews"], remove=["x"]),
            p.TelemetryReport(rows=[row("fuzz-0", "w", "s.default")]),
            p.TapEvents(id="t", dropped=3, ended="max"),
            p.CertificateRequest(request_id=1, csr="x"),
            p.Join(),
            p.Leave(),
        )
    ]
    peer = await connect(mesh)
    await peer.hello("fuzz-0", workload="fuzz-0")
    for _ in range(300):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(frame) + 1)
            action = rng.randrange(3)
            if action == 0 and at < len(frame):
                frame[at] = rng.randrange(256)
            elif action == 1:
                del frame[at:]
            else:
                frame[at:at] = rng.choice([b"{", b"}", b'"', b",", b"[]", b"-1", b"null"])
        peer.send_payload(bytes(frame))
    assert await peer.still_answers()
    assert "fuzz-0" in mesh.controller.discovery.sessions
    assert sum(refusals(mesh).values()) > 0
    await assert_still_served(watched)
