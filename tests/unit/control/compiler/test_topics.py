"""Which topics a change touches: the discovery server recompiles only those bundles."""

from __future__ import annotations

from tests.support.compiler_meshes import REVIEWS_SPLIT, mesh, service

from mycelium.control.compiler.topics import topics_of_change


def test_a_route_change_touches_only_its_service() -> None:
    state = mesh(REVIEWS_SPLIT + service("ratings"))
    route = state.get("HTTPRoute", "default", "reviews")
    assert topics_of_change(state, route, route) == {"service:reviews.default"}
    wl = state.get("Workload", "default", "reviews-v1-0")
    assert topics_of_change(state, None, wl) == {
        "workload:default/reviews-v1-0",
        "service:reviews.default",
    }
