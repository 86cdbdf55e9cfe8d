"""The integration tests' mesh of a controller, two apps and a caller sidecar: see
tests/support/proxy_mesh.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.proxy_mesh import ProxyMesh, running_proxy_mesh


@pytest.fixture
async def proxy_mesh(tmp_path: Path) -> AsyncIterator[ProxyMesh]:
    async with running_proxy_mesh(tmp_path) as mesh:
        yield mesh
