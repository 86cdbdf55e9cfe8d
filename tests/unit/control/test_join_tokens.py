"""Join tokens: minted for one identity, good once, refused with a reason otherwise."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from mycelium.control.join_tokens import JoinTokens, TokenRefused, load_or_create_key
from mycelium.errors import MeshError
from mycelium.identity.spiffe import SpiffeId

KEY = b"k" * 32


def test_a_token_vouches_for_its_identity_once() -> None:
    tokens = JoinTokens(KEY, "cluster.local")
    issued = tokens.mint("shop", "reviews", 600)

    assert tokens.redeem(issued.token) == SpiffeId("cluster.local", "shop", "reviews")
    with pytest.raises(TokenRefused) as second:
        tokens.redeem(issued.token)

    assert second.value.reason == "replayed"
    assert tokens.refusals["replayed"] == 1


def test_an_expired_token_is_refused() -> None:
    tokens = JoinTokens(KEY, "cluster.local")
    issued = tokens.mint("shop", "reviews", 60)
    with pytest.raises(TokenRefused, match="expired"):
        tokens.redeem(issued.token, now=time.time() + 61)
    assert tokens.refusals["expired"] == 1


def test_a_token_from_another_key_is_forged() -> None:
    theirs = JoinTokens(b"x" * 32, "cluster.local").mint("shop", "reviews", 600)
    ours = JoinTokens(KEY, "cluster.local")
    with pytest.raises(TokenRefused) as refused:
        ours.redeem(theirs.token)
    assert refused.value.reason == "forged"


def test_a_token_edited_to_name_another_identity_is_forged() -> None:
    tokens = JoinTokens(KEY, "cluster.local")
    issued = tokens.mint("shop", "reviews", 600)
    prefix, payload, mac = issued.token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sa"] = "payments"
    edited = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenRefused) as refused:
        tokens.redeem(f"{prefix}.{edited}.{mac}")
    assert refused.value.reason == "forged"
    assert tokens.redeem(issued.token).service_account == "reviews"  # the real one still works


@pytest.mark.parametrize("token", ["", "Bearer x", "myc1.only-two", "myc1.a.b!c", "myc2.a.b"])
def test_garbage_is_malformed(token: str) -> None:
    tokens = JoinTokens(KEY, "cluster.local")
    with pytest.raises(TokenRefused) as refused:
        tokens.redeem(token)
    assert refused.value.reason in {"malformed", "forged"}


def test_lifetimes_and_names_are_checked_when_minting() -> None:
    tokens = JoinTokens(KEY, "cluster.local")
    with pytest.raises(MeshError, match="at most 86400 s"):
        tokens.mint("shop", "reviews", 2 * 86400)
    with pytest.raises(MeshError, match="not a lowercase DNS label"):
        tokens.mint("Shop", "reviews", 60)


def test_the_key_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "ca" / "join-token.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == key
