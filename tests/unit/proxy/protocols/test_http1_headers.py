"""Header rules between a proxy's two connections: hop-by-hop fields (RFC 9110 section
7.6.1), what a trailer may carry (section 6.5.1), and the record of each hop
(X-Forwarded-*, Forwarded per RFC 7239)."""

from __future__ import annotations

from mycelium.proxy.protocols.headers import (
    HOP_BY_HOP,
    add_forwarding,
    client_certificate_field,
    forwardable_trailers,
    strip_hop_by_hop,
)


def test_every_hop_by_hop_field_is_removed_and_the_rest_kept_in_order() -> None:
    headers = [
        (b"host", b"reviews"),
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"accept", b"*/*"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"trailer", b"x-checksum"),
        (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
        (b"proxy-authenticate", b"Basic"),
        (b"content-length", b"5"),
        (b"accept", b"text/html"),
    ]
    assert strip_hop_by_hop(headers) == [
        (b"host", b"reviews"),
        (b"accept", b"*/*"),
        (b"content-length", b"5"),  # end-to-end: it stays
        (b"accept", b"text/html"),
    ]
    assert {name for name, _ in headers} - {b"host", b"accept", b"content-length"} == HOP_BY_HOP


def test_fields_the_connection_field_nominates_go_too_case_insensitively() -> None:
    headers = [
        (b"host", b"a"),
        (b"connection", b"X-Session-Hint, close"),
        (b"x-session-hint", b"abc"),
        (b"x-debug", b"1"),
        (b"connection", b" x-DEBUG ,,"),
        (b"x-kept", b"yes"),
    ]
    assert strip_hop_by_hop(headers) == [(b"host", b"a"), (b"x-kept", b"yes")]


def test_the_input_is_not_modified() -> None:
    headers = [(b"connection", b"x-a"), (b"x-a", b"1"), (b"host", b"a")]
    copy = list(headers)
    strip_hop_by_hop(headers)
    add_forwarding(headers, client_address="10.0.0.1", proto="http", host=b"a")
    assert headers == copy


def test_nothing_to_strip_gives_an_equal_new_list() -> None:
    headers = [(b"host", b"a"), (b"accept", b"*/*")]
    stripped = strip_hop_by_hop(headers)
    assert stripped == headers
    assert stripped is not headers


def test_keep_upgrade_keeps_the_upgrade_field_even_when_nominated() -> None:
    headers = [
        (b"host", b"a"),
        (b"connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"websocket"),
        (b"http2-settings", b"AAMAAABk"),
    ]
    assert strip_hop_by_hop(headers, keep_upgrade=True) == [
        (b"host", b"a"),
        (b"upgrade", b"websocket"),
    ]
    assert strip_hop_by_hop(headers) == [(b"host", b"a")]


def test_the_first_hop_records_the_client() -> None:
    headers = add_forwarding(
        [(b"host", b"shop.example")],
        client_address="192.0.2.43",
        proto="https",
        host=b"shop.example",
        by="10.1.0.7",
    )
    assert headers == [
        (b"host", b"shop.example"),
        (b"x-forwarded-for", b"192.0.2.43"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"shop.example"),
        (b"forwarded", b"for=192.0.2.43;proto=https;host=shop.example;by=10.1.0.7"),
    ]


def test_a_later_hop_appends_to_the_lists_and_keeps_the_original_host() -> None:
    headers = [
        (b"x-forwarded-for", b"203.0.113.9"),
        (b"host", b"reviews:9080"),
        (b"x-forwarded-for", b"198.51.100.2"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"shop.example"),
        (b"forwarded", b"for=203.0.113.9;proto=https"),
    ]
    out = add_forwarding(headers, client_address="10.0.0.5", proto="http", host=b"reviews:9080")
    assert out == [
        (b"host", b"reviews:9080"),
        (b"x-forwarded-host", b"shop.example"),
        (b"x-forwarded-for", b"203.0.113.9, 198.51.100.2, 10.0.0.5"),
        (b"x-forwarded-proto", b"http"),
        (b"forwarded", b'for=203.0.113.9;proto=https, for=10.0.0.5;proto=http;host="reviews:9080"'),
    ]


def test_ipv6_nodes_are_bracketed_and_quoted_in_forwarded_only() -> None:
    out = dict(
        add_forwarding(
            [], client_address="2001:db8:cafe::17", proto="http", host=None, by="[::1]:15006"
        )
    )
    assert out[b"x-forwarded-for"] == b"2001:db8:cafe::17"
    assert out[b"forwarded"] == b'for="[2001:db8:cafe::17]";proto=http;by="[::1]:15006"'
    assert b"x-forwarded-host" not in out


def test_a_host_with_quotes_is_escaped_in_forwarded() -> None:
    out = dict(add_forwarding([], client_address="10.0.0.1", proto="http", host=b'a"b\\c'))
    assert out[b"forwarded"] == b'for=10.0.0.1;proto=http;host="a\\"b\\\\c"'


def test_only_the_hop_that_ended_mtls_says_who_the_client_is() -> None:
    forged = [(b"host", b"a"), (b"x-forwarded-client-cert", b"URI=spiffe://td/ns/x/sa/admin")]
    peer = "spiffe://td/ns/default/sa/productpage"

    plaintext = add_forwarding(forged, client_address="10.0.0.1", proto="http", host=b"a")
    over_mtls = add_forwarding(
        forged,
        client_address="10.0.0.1",
        proto="http",
        host=b"a",
        client_certificate=client_certificate_field("spiffe://td/ns/default/sa/ratings", peer),
    )

    assert [v for n, v in plaintext if n == b"x-forwarded-client-cert"] == []
    assert [v for n, v in over_mtls if n == b"x-forwarded-client-cert"] == [
        b"By=spiffe://td/ns/default/sa/ratings;URI=spiffe://td/ns/default/sa/productpage"
    ]
    assert client_certificate_field("spiffe://td/ns/default/sa/ratings", None) is None


def test_a_trailer_keeps_what_trailers_may_carry_and_drops_the_rest() -> None:
    trailers = [
        (b"grpc-status", b"0"),
        (b"grpc-message", b"ok"),
        (b"x-checksum", b"sha256=abc"),
        (b"content-length", b"0"),  # framing, read after the framing was decided
        (b"transfer-encoding", b"chunked"),
        (b"host", b"payments.shop"),  # routing, after the route was chosen
        (b"authorization", b"Bearer stolen"),  # after authorization was checked
        (b"cookie", b"session=1"),
        (b"connection", b"close"),
        (b"x-forwarded-for", b"198.18.0.66"),  # a peer's claimed address
        (b":path", b"/admin"),  # a pseudo-header in trailers: malformed in HTTP/2
    ]
    kept, dropped = forwardable_trailers(trailers)
    assert kept == trailers[:3]
    assert dropped == 8


def test_an_empty_trailer_section_stays_empty() -> None:
    assert forwardable_trailers([]) == ([], 0)
