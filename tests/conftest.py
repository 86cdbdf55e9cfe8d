"""Fixtures every test layer may use: real etcd servers, started once per session.

The repository root goes on sys.path so that `from tests.support... import ...` works
however pytest was launched (`pytest`, `python -m pytest`, from any directory).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.etcd import EtcdCluster, EtcdLaunchError  # noqa: E402


def _start(size: int) -> EtcdCluster:
    try:
        return EtcdCluster.start(size)
    except EtcdLaunchError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    """One etcd member for the whole session; tests keep to their own key prefix."""
    cluster = _start(1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """Three etcd members for the whole session; tests must not kill them (start their own)."""
    cluster = _start(3)
    yield cluster
    cluster.stop()
