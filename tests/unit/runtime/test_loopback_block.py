"""Two meshes on one machine take different blocks of loopback addresses for their
process pods, and a block comes free when its holder lets go (or dies: the lock is a
flock on an open file)."""

from __future__ import annotations

from pathlib import Path

from mycelium.runtime.node_network import LoopbackBlock
from mycelium.runtime.pod_network import PROCESS_NETWORK


def test_two_meshes_never_share_a_block(tmp_path: Path) -> None:
    first, second = LoopbackBlock(tmp_path), LoopbackBlock(tmp_path)

    a, b = first.claim(), second.claim()

    assert a != b
    assert a.subnet_of(PROCESS_NETWORK)
    assert b.subnet_of(PROCESS_NETWORK)
    first.release()
    third = LoopbackBlock(tmp_path)
    assert third.claim() == a  # free again
    second.release()
    third.release()
