"""The store under test, once per backend: `sqlite`, `etcd` (one member) and
`etcd-cluster` (three members). Every contract test runs against each of them, and
against `sqlite-timed`: the controller's timing wrapper (`TimedStore`) around SQLite,
which must keep the contract too.

The etcd servers are shared by the session, so each test works under its own `prefix`
and never assumes the store's revision starts anywhere in particular.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.etcd import EtcdCluster

from mycelium.store import EtcdStore, SqliteStore, Store, TimedStore

BACKENDS = ["sqlite", "sqlite-timed", "etcd", "etcd-cluster"]


class _Discarded:
    def store_call(self, operation: str, seconds: float) -> None:
        pass

    def store_error(self, operation: str, error: str) -> None:
        pass


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = await SqliteStore.open(tmp_path / "store.db")
    elif request.param == "sqlite-timed":
        opened = TimedStore(await SqliteStore.open(tmp_path / "store.db"), _Discarded())
    else:
        fixture = "etcd_server" if request.param == "etcd" else "etcd_cluster"
        cluster: EtcdCluster = request.getfixturevalue(fixture)
        opened = await EtcdStore.open(cluster.endpoints)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"/test/{uuid.uuid4().hex[:12]}/"
