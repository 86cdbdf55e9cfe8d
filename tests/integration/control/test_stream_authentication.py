"""A discovery stream must prove the identity its hello claims, on a controller that
lets no anonymous proxy in (the default): a join token opens the stream that fetches
the first certificate, the certificate opens every stream after; nothing, a forged
token, or another identity's token is refused with the reason, counted, logged
without the token, and limited per client address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.controller import hello_answer, running_controller
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery import protocol as p
from mycelium.discovery.client import ControllerAddress, DiscoveryClient
from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, ProxySettings


@pytest.fixture
async def strict_controller(tmp_path: Path) -> AsyncIterator[Controller]:
    async with running_controller(tmp_path / "home", allow_anonymous_proxies=False) as running:
        yield running


def claim(node_id: str, account: str, token: str | None = None) -> p.Hello:
    return p.Hello(
        node=p.NodeInfo(id=node_id, namespace="shop", service_account=account), token=token
    )


async def test_streams_that_prove_nothing_or_the_wrong_identity_are_refused(
    strict_controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    controller = strict_controller
    reviews_token = controller.join_tokens.mint("shop", "reviews", 600).token

    anonymous = await hello_answer(controller, claim("a-0", "reviews"))
    assert isinstance(anonymous, p.Refusal)
    assert anonymous.code == "unauthenticated"
    assert "join token" in anonymous.message

    someone_else = await hello_answer(controller, claim("b-0", "payments", reviews_token))
    assert isinstance(someone_else, p.Refusal)
    assert "spiffe://cluster.local/ns/shop/sa/reviews" in someone_else.message

    forged = await hello_answer(controller, claim("c-0", "reviews", reviews_token[:-2] + "xx"))
    assert isinstance(forged, p.Refusal)

    welcomed = await hello_answer(controller, claim("d-0", "reviews", reviews_token))
    assert isinstance(welcomed, p.Welcome)  # the token was checked, not spent

    assert controller.stream_refusals["unauthenticated"] == 1
    assert controller.stream_refusals["identity_mismatch"] == 1
    assert (
        controller.stream_refusals["token_forged"] + controller.stream_refusals["token_malformed"]
        == 1
    )
    assert "refused a discovery stream from 127.0.0.1 claiming shop/payments" in caplog.text
    assert reviews_token not in caplog.text
    assert reviews_token[:-2] not in caplog.text


async def test_failed_attempts_from_one_address_are_slowed_down(
    strict_controller: Controller,
) -> None:
    controller = strict_controller
    answers = [await hello_answer(controller, claim(f"g-{i}", "reviews")) for i in range(12)]
    refused = [a.message for a in answers if isinstance(a, p.Refusal)]
    assert len(refused) == 12
    assert "too many failed attempts" in refused[-1]
    assert controller.stream_refusals["rate_limited"] >= 1
    # even a valid token waits for the limit to pass: guessing gets no faster
    token = controller.join_tokens.mint("shop", "reviews", 600).token
    late = await hello_answer(controller, claim("g-ok", "reviews", token))
    assert isinstance(late, p.Refusal)


async def test_a_sidecar_proves_itself_with_its_token_then_with_its_certificate(
    strict_controller: Controller, tmp_path: Path
) -> None:
    controller = strict_controller
    token = controller.join_tokens.mint("shop", "reviews", 600).token
    sidecar = ProxyServer(
        ProxySettings(
            node=p.NodeInfo(id="reviews-0", namespace="shop", service_account="reviews"),
            controllers=[ControllerAddress("127.0.0.1", controller.discovery_port)],
            trust_bundle=controller.config.ca_dir / "root.pem",
            outbound=ListenAddress("127.0.0.1", 0),
            admin=None,
            health=None,
            metrics=None,
        ),
        join_token=token,
    )
    await sidecar.start()
    try:
        await eventually(lambda: sidecar.core.svid is not None, what="the first SVID")
        assert controller.streams_proven["join_token"] == 1

        # The token is spent now; the next stream must be proven by the certificate.
        client = sidecar.core.discovery
        assert isinstance(client, DiscoveryClient)
        writer = client._writer  # no public way to cut the stream
        assert writer is not None
        writer.close()
        await eventually(
            lambda: controller.streams_proven["certificate"] == 1 and client.connected.is_set(),
            what="a reconnect proven by the SVID",
        )
        assert sum(controller.stream_refusals.values()) == 0
    finally:
        await sidecar.stop()
