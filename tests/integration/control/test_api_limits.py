"""The controller's REST API limits each client, and logs refused admin tokens without
the token."""

from __future__ import annotations

import logging

import pytest
from tests.support.controller import Mesh


async def test_the_identity_endpoint_limits_a_guessing_client(mesh: Mesh) -> None:
    session = mesh.api.session
    url = f"{mesh.api.base}/identity/v1/svids"
    statuses = []
    for attempt in range(15):
        async with session.post(
            url, json={"csr": "x"}, headers={"Authorization": f"Bearer guess-{attempt}"}
        ) as response:
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert (await response.json())["error"] == "rate_limited"
    assert statuses[:10] == [401] * 10  # the burst, each a refused token
    assert 429 in statuses[10:]


async def test_a_wrong_admin_token_is_logged_without_itself(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mycelium.control.api")
    async with mesh.api.session.get(
        f"{mesh.api.base}/api/v1/status", headers={"Authorization": "Bearer hunter2-secret"}
    ) as response:
        assert response.status == 401
    assert "no valid admin token" in caplog.text
    assert "GET /api/v1/status from 127.0.0.1" in caplog.text
    assert "hunter2" not in caplog.text
