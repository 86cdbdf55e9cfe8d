"""The proxy's half of tap: the filter (sans-IO), and the observer's batching, limits
and ends, fed fake finished requests; its messages go to a list, not a stream."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest
from tests.support.finished import FakeClient, finished_request
from tests.support.polling import eventually

from mycelium.cli.commands.tap import request_text
from mycelium.discovery import protocol as p
from mycelium.discovery.errors import ProtocolViolation
from mycelium.telemetry import FinishedRequest
from mycelium.telemetry.tap import BATCH_EVENTS, Tap, matches, mesh_leg


def test_an_empty_filter_matches_every_request() -> None:
    assert matches(
        p.TapFilter(), direction="inbound", method=b"GET", path=b"/", authority="a", status=0
    )


@pytest.mark.parametrize(
    ("tap_filter", "hit"),
    [
        (p.TapFilter(path_prefix="/api"), True),
        (p.TapFilter(path_prefix="/admin"), False),
        (p.TapFilter(method="GET"), True),
        (p.TapFilter(method="POST"), False),
        (p.TapFilter(authority="Reviews:9080"), True),  # host names ignore case
        (p.TapFilter(authority="ratings"), False),
        (p.TapFilter(status="503"), True),
        (p.TapFilter(status="504"), False),
        (p.TapFilter(status="5xx"), True),
        (p.TapFilter(status="2xx"), False),
        (p.TapFilter(direction="outbound"), True),
        (p.TapFilter(direction="inbound"), False),
        (p.TapFilter(path_prefix="/api", status="5xx", method="GET"), True),
        (p.TapFilter(path_prefix="/api", status="4xx", method="GET"), False),
    ],
)
def test_every_field_of_the_filter_must_match(tap_filter: p.TapFilter, hit: bool) -> None:
    request = {
        "direction": "outbound",
        "method": b"GET",
        "path": b"/api/books?id=1",
        "authority": "reviews:9080",
        "status": 503,
    }
    assert matches(tap_filter, **request) is hit  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["5XX", "50", "600", "6xx", "x"])
def test_a_status_filter_is_a_code_or_a_class(status: str) -> None:
    with pytest.raises(ValueError, match="code"):
        p.TapFilter(status=status)


def test_tap_messages_survive_the_wire() -> None:
    start = p.TapStart(
        id="t1", filter=p.TapFilter(path_prefix="/api", status="5xx"), max=10, seconds=30
    )
    assert p.parse_server_message(p.encode(start)[4:]) == start
    assert p.parse_server_message(p.encode(p.TapStop(id="t1"))[4:]) == p.TapStop(id="t1")
    events = p.TapEvents(id="t1", events=[_event()], dropped=3, ended="max")
    assert p.parse_client_message(p.encode(events)[4:]) == events


def test_a_tap_start_with_a_bad_filter_or_limits_is_a_protocol_violation() -> None:
    bad_filter = b'{"type":"tap_start","id":"t","seconds":1,"filter":{"path_prefix":"api"}}'
    with pytest.raises(ProtocolViolation, match="must start with /"):
        p.parse_server_message(bad_filter)
    with pytest.raises(ProtocolViolation, match="rate"):
        p.parse_server_message(b'{"type":"tap_start","id":"t","seconds":1,"rate":0}')


def _event() -> p.TapEvent:
    return p.TapEvent(
        ts=1.0,
        direction="inbound",
        protocol="HTTP/1.1",
        method="GET",
        path="/",
        authority="reviews",
        service="reviews.default",
        status=200,
        latency_ms=1.5,
        source="198.18.0.9",
        source_principal="spiffe://cluster.local/ns/default/sa/productpage",
        destination="127.0.0.1:9080",
        reason="",
        response_flags="-",
    )


# --- the observer -------------------------------------------------------------------------


PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/productpage"


def _Finished(**fields: object) -> FinishedRequest:
    """A request a sidecar served its app: GET /api/books, 200."""
    defaults: dict[str, object] = {
        "target": b"/api/books",
        "status": 200,
        "reason": "",
        "protocol": "HTTP/1.1",
        "method": b"GET",
        "host": "reviews:9080",
        "service": "reviews.default",
        "upstream_host": "127.0.0.1:9080",
        "downstream": FakeClient(peer_principal=PRODUCTPAGE),
    }
    return finished_request("inbound", **{**defaults, **fields})


class _Stream:
    def __init__(self) -> None:
        self.sent: list[p.TapEvents] = []
        self.up = True

    def send(self, message: p.ClientMessage) -> bool:
        if self.up:
            assert isinstance(message, p.TapEvents)
            # what the controller would read: through the wire format
            self.sent.append(msgspec.json.decode(msgspec.json.encode(message), type=p.TapEvents))
        return self.up

    def events(self) -> list[p.TapEvent]:
        return [e for batch in self.sent for e in batch.events]


def test_with_no_tap_active_requests_cost_no_event() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    for _ in range(100):
        tap.request_finished(_Finished())  # type: ignore[arg-type]
    assert tap.events_built == 0
    assert stream.sent == []


async def test_matching_requests_leave_in_one_batch_with_their_fields() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="t", filter=p.TapFilter(path_prefix="/api"), seconds=30))
    tap.request_finished(_Finished())  # type: ignore[arg-type]
    tap.request_finished(_Finished(target=b"/health"))  # type: ignore[arg-type]
    tap.request_finished(_Finished(status=503, reason="circuit_open"))  # type: ignore[arg-type]
    assert stream.sent == []  # batched, not a write per request

    await eventually(lambda: stream.sent, what="the batch")

    (batch,) = stream.sent
    assert batch.id == "t"
    assert batch.ended == ""
    ok, refused = batch.events
    assert (ok.method, ok.path, ok.authority, ok.status) == (
        "GET",
        "/api/books",
        "reviews:9080",
        200,
    )
    assert ok.direction == "inbound"
    assert ok.source == "198.18.0.9"
    assert ok.source_principal == PRODUCTPAGE
    assert ok.destination == "127.0.0.1:9080"
    assert ok.latency_ms >= 0
    assert (refused.status, refused.reason, refused.response_flags) == (503, "circuit_open", "UO")
    assert tap.events_built == 2


async def test_a_tap_ends_at_its_maximum_and_says_so() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="t", max=3, seconds=30))
    for _ in range(5):
        tap.request_finished(_Finished())  # type: ignore[arg-type]
    assert len(stream.events()) == 3
    assert stream.sent[-1].ended == "max"
    assert tap.sessions == {}
    assert tap.events_built == 3


async def test_over_its_rate_a_tap_counts_drops_instead_of_events() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="t", rate=10, seconds=30))
    for _ in range(25):
        tap.request_finished(_Finished())  # type: ignore[arg-type]
    tap.command(p.TapStop(id="t"))
    assert len(stream.events()) == 10
    assert sum(b.dropped for b in stream.sent) == 15
    assert stream.sent[-1].ended == "stopped"
    assert tap.events_built == 10


async def test_a_full_batch_leaves_without_waiting_for_the_timer() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="t", rate=1000, seconds=30))
    for _ in range(BATCH_EVENTS):
        tap.request_finished(_Finished())  # type: ignore[arg-type]
    assert len(stream.sent) == 1
    assert len(stream.sent[0].events) == BATCH_EVENTS


async def test_a_tap_ends_at_its_deadline() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="t", seconds=0.05))
    await eventually(lambda: stream.sent and stream.sent[-1].ended == "deadline")
    assert tap.sessions == {}


async def test_two_taps_share_one_event_and_each_gets_it() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="a", max=1, seconds=30))
    tap.command(p.TapStart(id="b", max=1, seconds=30))
    tap.request_finished(_Finished())  # type: ignore[arg-type]
    assert sorted(b.id for b in stream.sent) == ["a", "b"]
    assert tap.events_built == 1


async def test_when_the_stream_goes_every_tap_ends_and_costs_nothing_again() -> None:
    stream = _Stream()
    tap = Tap(stream.send)
    tap.command(p.TapStart(id="t", seconds=30))
    tap.request_finished(_Finished())  # type: ignore[arg-type]
    stream.up = False
    await eventually(lambda: not tap.sessions, what="the tap to notice the stream went")
    built = tap.events_built
    tap.request_finished(_Finished())  # type: ignore[arg-type]
    assert tap.events_built == built


# --- the mesh leg's security ------------------------------------------------------------

REVIEWS_ID = "spiffe://cluster.local/ns/default/sa/reviews"


@dataclass
class _Endpoint:
    workload: str = "reviews-v1-0"
    labels: dict[str, str] = field(default_factory=dict)
    identity: str = REVIEWS_ID
    mtls: bool = True


def test_inbound_the_mesh_leg_is_the_callers() -> None:
    served = _Finished(downstream=FakeClient(peer_principal=PRODUCTPAGE))
    assert mesh_leg(served, None, "spiffe://me") == (True, PRODUCTPAGE)
    plain = _Finished(downstream=FakeClient(peer_principal=None))
    assert mesh_leg(plain, None, "spiffe://me") == (False, None)


def test_outbound_the_mesh_leg_is_the_one_to_the_destinations_proxy() -> None:
    # The app's call reached its sidecar in plaintext (no peer principal): that leg is
    # not the mesh's. The sidecar went on over mTLS to an endpoint that runs a proxy.
    call = finished_request(
        "outbound",
        downstream=FakeClient(peer_principal=None),
        cluster_name="reviews.default|9080",
        upstream_host="198.18.0.4:9080",
    )
    found = {("reviews.default|9080", "198.18.0.4:9080"): _Endpoint()}

    def lookup(cluster: str, upstream: str) -> _Endpoint | None:
        return found.get((cluster, upstream))

    assert mesh_leg(call, lookup, "spiffe://me") == (True, REVIEWS_ID)
    assert mesh_leg(call, lookup, None) == (False, None)  # no SVID yet: plaintext
    found[("reviews.default|9080", "198.18.0.4:9080")] = _Endpoint(mtls=False)
    assert mesh_leg(call, lookup, "spiffe://me") == (False, None)  # no proxy there


def test_a_tap_line_names_the_leg_its_security_is_for() -> None:
    line = {
        "workload": "productpage-0",
        "proxy": "productpage-0",
        "direction": "outbound",
        "method": "GET",
        "authority": "reviews:9080",
        "path": "/",
        "status": 200,
        "latency_ms": 1.0,
        "source": "127.0.0.1",
        "destination": "198.18.0.4:9080",
        "source_principal": None,
        "mesh_mtls": True,
        "mesh_peer": REVIEWS_ID,
        "reason": "",
    }
    assert f"mesh=mtls to={REVIEWS_ID}" in request_text(line)
    assert "tls=none" not in request_text(line)
    inbound = {**line, "direction": "inbound", "mesh_peer": PRODUCTPAGE}
    assert f"mesh=mtls from={PRODUCTPAGE}" in request_text(inbound)
    assert "mesh=plaintext" in request_text({**line, "mesh_mtls": False, "mesh_peer": None})
