"""A sidecar renews its SVID at half-life by itself, over the discovery stream, proving
possession of the certificate it holds. Here SVIDs live 10 s, so renewal comes within
about 4-6 s."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.controller import controller_config
from tests.support.polling import eventually

from mycelium.control.controller import Controller
from mycelium.discovery.client import ControllerAddress
from mycelium.discovery.protocol import NodeInfo
from mycelium.proxy.server import ProxyServer
from mycelium.proxy.settings import ListenAddress, ProxySettings


@pytest.fixture
async def short_lived(tmp_path: Path) -> AsyncIterator[Controller]:
    controller = Controller(controller_config(tmp_path / "home", svid_ttl_seconds=10))
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()


async def test_a_sidecar_renews_its_certificate_at_half_life(
    short_lived: Controller, tmp_path: Path
) -> None:
    token = short_lived.join_tokens.mint("default", "reviews", 600).token
    settings = ProxySettings(
        node=NodeInfo(id="reviews-0", service_account="reviews"),
        controllers=[ControllerAddress("127.0.0.1", short_lived.discovery_port)],
        trust_bundle=tmp_path / "home" / "ca" / "root.pem",
        outbound=ListenAddress("127.0.0.1", 0),
        admin=ListenAddress("127.0.0.1", 0),
        health=ListenAddress("127.0.0.1", 0),
    )
    sidecar = ProxyServer(settings, join_token=token)
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
