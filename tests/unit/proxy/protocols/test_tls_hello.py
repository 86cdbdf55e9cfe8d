"""Telling the mesh's mTLS from other bytes by the ClientHello's ALPN offer, and reading
the server name a gateway routes by."""

from __future__ import annotations

from tests.support.client_hello import client_hello

from mycelium.identity.alpn import MESH_ALPN
from mycelium.proxy.protocols.tls_hello import ClientHello, judge_client_hello, read_client_hello


def test_a_sidecars_hello_is_the_mesh_once_its_first_record_is_whole() -> None:
    hello = client_hello("h2", MESH_ALPN)
    assert judge_client_hello(hello) == "mesh"
    assert judge_client_hello(hello + b"more records") == "mesh"
    for cut in range(len(hello)):
        assert judge_client_hello(hello[:cut]) is None, cut


def test_an_apps_own_tls_is_not_the_mesh() -> None:
    assert judge_client_hello(client_hello()) == "other"
    assert judge_client_hello(client_hello("postgresql", "mycelium")) == "other"


def test_plaintext_is_decided_at_its_first_byte() -> None:
    assert judge_client_hello(b"G") == "other"
    assert judge_client_hello(b"\x00") == "other"


def test_malformed_records_are_not_the_mesh() -> None:
    hello = client_hello(MESH_ALPN)
    assert judge_client_hello(b"\x16\x02" + hello[2:]) == "other"  # no TLS version
    assert judge_client_hello(b"\x16\x03\x01\xff\xff") == "other"  # longer than a record
    # a record whose body cuts the hello short: the ALPN list cannot be read
    body = hello[5:60]
    assert judge_client_hello(b"\x16\x03\x01" + len(body).to_bytes(2) + body) == "other"
    # not a ClientHello (a ServerHello's type)
    changed = hello[:5] + b"\x02" + hello[6:]
    assert judge_client_hello(changed) == "other"


def test_the_server_name_is_read_for_a_gateway_to_route_by() -> None:
    hello = read_client_hello(client_hello("h2", server_name="Shop.Example.com"))
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "shop.example.com"
    assert hello.alpn == [b"h2"]
    unnamed = read_client_hello(client_hello(server_name=None))
    assert isinstance(unnamed, ClientHello)
    assert unnamed.server_name is None
    assert read_client_hello(b"GET / HTTP/1.1\r\n") == "not_tls"
    assert read_client_hello(client_hello()[:20]) is None
