"""`build_balancer` turns a cluster's `balancer` setting into a balancer."""

import random

import pytest

from mycelium.errors import ConfigError
from mycelium.proxy.upstream.balancers import (
    ConsistentHash,
    LeastRequest,
    PeakEwma,
    RoundRobin,
    build_balancer,
)


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("ROUND_ROBIN", RoundRobin),
        ("LEAST_REQUEST", LeastRequest),
        ("P2C_EWMA", PeakEwma),
        ("CONSISTENT_HASH", ConsistentHash),
    ],
)
def test_each_setting_names_its_balancer(kind: str, cls: type) -> None:
    assert isinstance(build_balancer(kind, random.Random(1)), cls)  # type: ignore[arg-type]


def test_an_unknown_setting_says_which_ones_exist() -> None:
    with pytest.raises(ConfigError, match="P2C_EWMA"):
        build_balancer("RANDOM", random.Random(1))  # type: ignore[arg-type]
