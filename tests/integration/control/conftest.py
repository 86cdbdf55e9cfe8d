"""A real controller on loopback: free ports, the embedded store in a temp home."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.controller import Mesh, running_mesh


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    async with running_mesh(tmp_path / "home") as mesh:
        yield mesh
