"""The role table: every role the discovery protocol names either compiles to a snapshot
or is refused with a message that names it; no role falls through to another's config."""

from __future__ import annotations

from typing import get_args, get_type_hints

import pytest
from tests.support.compiler_meshes import REVIEWS_SPLIT, mesh

from mycelium.control.compiler.roles import (
    OWN_BUNDLES,
    ROLE_BUNDLES,
    NotCompiled,
    RoleBundles,
    RoleNotCompiled,
    bundles_of_role,
    compile_snapshot,
)
from mycelium.discovery.protocol import NodeInfo

PROTOCOL_ROLES: tuple[str, ...] = get_args(get_type_hints(NodeInfo)["role"])


def test_the_table_has_a_row_for_every_role_the_protocol_names_and_no_other() -> None:
    assert set(ROLE_BUNDLES) == set(PROTOCOL_ROLES)


@pytest.mark.parametrize("role", PROTOCOL_ROLES)
def test_every_role_compiles_or_is_refused_by_name(role: str) -> None:
    node = NodeInfo(id=f"{role}-0", workload=f"{role}-0", role=role)
    plan = ROLE_BUNDLES[role]
    if isinstance(plan, NotCompiled):
        with pytest.raises(RoleNotCompiled, match=f"'{role}' role"):
            compile_snapshot(mesh(REVIEWS_SPLIT), node, ["reviews"])
        return
    entries = compile_snapshot(mesh(REVIEWS_SPLIT), node, ["reviews"])
    for own in plan.own:
        assert own.kind in entries  # each own bundle carries its entry of that name
        assert OWN_BUNDLES[own.kind] is own  # and a cache finds it by its kind
    assert "route/reviews.default" in entries


def test_what_each_compiled_role_receives() -> None:
    kinds = {
        role: [own.kind for own in plan.own]
        for role, plan in ROLE_BUNDLES.items()
        if isinstance(plan, RoleBundles)
    }
    assert kinds == {"sidecar": ["inbound"], "gateway": ["inbound", "gateway"]}


def test_a_role_outside_the_table_is_refused_by_name() -> None:
    with pytest.raises(RoleNotCompiled, match="'mystery' role") as refused:
        bundles_of_role("mystery")
    assert refused.value.role == "mystery"
