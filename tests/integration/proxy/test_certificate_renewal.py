"""A sidecar renews its SVID at half-life by itself, over the discovery stream, proving
possession of the certificate it holds; without its controller it keeps the certificate,
warns once a quarter of its life is left, and renews when the controller is back.
Here SVIDs live 10 s, so renewal comes within about 4-6 s."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from tests.support.controller import controller_config, running_controller
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery import client as discovery_client
from mycelium.discovery.client import ControllerAddress
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.listeners.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, ProxySettings


def reviews_sidecar(controller: Controller, token: str) -> ProxyServer:
    """A sidecar for reviews with its join token, talking to `controller`."""
    settings = ProxySettings(
        node=NodeInfo(id="reviews-0", service_account="reviews"),
        controllers=[ControllerAddress("127.0.0.1", controller.discovery_port)],
        trust_bundle=controller.config.ca_dir / "root.pem",
        outbound=ListenAddress("127.0.0.1", 0),
        admin=ListenAddress("127.0.0.1", 0),
        health=ListenAddress("127.0.0.1", 0),
        metrics=ListenAddress("127.0.0.1", 0),
    )
    return ProxyServer(settings, join_token=token)


@pytest.fixture
async def short_lived(tmp_path: Path) -> AsyncIterator[Controller]:
    async with running_controller(tmp_path / "home", svid_ttl_seconds=10) as running:
        yield running


async def test_a_sidecar_renews_its_certificate_at_half_life(short_lived: Controller) -> None:
    token = short_lived.join_tokens.mint("default", "reviews", 600).token
    sidecar = reviews_sidecar(short_lived, token)
    await sidecar.start()
    try:
        await eventually(lambda: sidecar.core.svid is not None, what="the first SVID")
        first = sidecar.core.svid
        assert first is not None
        assert sidecar.core.counters["svid_renewed"] == 0  # not before half-life

        await eventually(
            lambda: sidecar.core.counters["svid_renewed"] >= 1, timeout=15, what="a renewal"
        )

        renewed = sidecar.core.svid
        assert renewed is not None
        assert renewed.identity == first.identity
        assert renewed.certificate.serial_number != first.certificate.serial_number
        assert renewed.key_pem != first.key_pem  # a new key each time
        assert renewed.expires_at > first.expires_at
        assert short_lived.svids.renewed >= 1
    finally:
        await sidecar.stop()


async def test_without_its_controller_a_sidecar_keeps_its_certificate_warns_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reconnect attempts every half second at most, so the return is noticed quickly.
    monkeypatch.setattr(discovery_client, "BACKOFF_MAX_SECONDS", 0.5)
    # 20 s certificates: the warning (a quarter of the life left) comes after 15 s,
    # which leaves a few seconds to bring the controller back before expiry.
    config = controller_config(tmp_path / "home", svid_ttl_seconds=20)
    controller = Controller(config)
    await controller.start()
    token = controller.join_tokens.mint("default", "reviews", 600).token
    sidecar = reviews_sidecar(controller, token)
    await sidecar.start()
    returned: Controller | None = None
    try:
        await eventually(lambda: sidecar.core.svid is not None, what="the first SVID")
        held = sidecar.core.svid
        assert held is not None
        await controller.stop()  # the controller goes away before half-life

        await eventually(
            lambda: sidecar.core.counters["svid_expiring"] >= 1,
            timeout=20,
            what="a warning that the certificate expires unrenewed",
        )
        assert sidecar.core.svid is held  # kept, still in use
        assert held.expires_at > dt.datetime.now(dt.UTC)
        assert "could not be renewed yet" in caplog.text

        # The controller comes back on its address: the sidecar renews by itself.
        returned = Controller(replace(config, discovery_port=controller.discovery_port))
        await returned.start()
        await eventually(
            lambda: sidecar.core.counters["svid_renewed"] >= 1,
            timeout=5,
            what="a renewal once the controller is back",
        )
        renewed = sidecar.core.svid
        assert renewed is not None
        assert renewed.expires_at > held.expires_at
        assert sidecar.core.counters["svid_expired"] == 0
    finally:
        await sidecar.stop()
        if returned is not None:
            await returned.stop()
