"""Which bytes of a request place it on a consistent-hash ring."""

from __future__ import annotations

from mycelium.discovery.config import ConsistentHash
from mycelium.proxy.upstream.hash_key import request_hash_key

HEADERS = [
    (b"host", b"reviews"),
    (b"x-user", b"alice"),
    (b"cookie", b"theme=dark; session=s-42 ;lang=en"),
]


def test_no_policy_means_no_ring() -> None:
    assert request_hash_key(None, HEADERS, "198.18.0.7") is None


def test_a_header_names_the_key_case_insensitively() -> None:
    assert request_hash_key(ConsistentHash(header="X-User"), HEADERS, "") == b"alice"


def test_a_missing_header_gives_no_key() -> None:
    assert request_hash_key(ConsistentHash(header="x-tenant"), HEADERS, "") is None


def test_a_cookie_is_found_among_others_with_its_spaces_trimmed() -> None:
    assert request_hash_key(ConsistentHash(cookie="session"), HEADERS, "") == b"s-42"
    assert request_hash_key(ConsistentHash(cookie="sess"), HEADERS, "") is None


def test_the_source_address_is_the_key_when_asked() -> None:
    key = request_hash_key(ConsistentHash(source_ip=True), HEADERS, "198.18.0.7")
    assert key == b"198.18.0.7"
