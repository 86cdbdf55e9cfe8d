"""Service vips through the real controller and its embedded store: allocated on apply,
stable across re-applies, refused when taken, freed on delete, never handed out twice."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from tests.support.controller import Mesh
from tests.support.polling import eventually

from mycelium.api.loading import load_documents
from mycelium.control.apply import apply_resources
from mycelium.control.vips import SERVICE_VIP_NETWORK, claim_key, stored_vip


def service(name: str, *, vip: str | None = None, port: int = 9080) -> str:
    extra = f"\n  vip: {vip}" if vip else ""
    return f"""---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}}}]{extra}
"""


async def stored_service(mesh: Mesh, name: str) -> dict[str, Any]:
    status, body = await mesh.api.call("GET", f"/api/v1/resources/Service/default/{name}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def vip_of(mesh: Mesh, name: str) -> str:
    vip = (await stored_service(mesh, name))["spec"]["vip"]
    assert isinstance(vip, str)
    return vip


async def test_a_service_without_vip_gets_one_from_the_range_everywhere(mesh: Mesh) -> None:
    status, body = await mesh.api.apply(service("reviews") + service("ratings"))
    assert status == 200, body

    reviews, ratings = await vip_of(mesh, "reviews"), await vip_of(mesh, "ratings")
    assert ipaddress.IPv4Address(reviews) in SERVICE_VIP_NETWORK
    assert ipaddress.IPv4Address(ratings) in SERVICE_VIP_NETWORK
    assert reviews != ratings
    # The listing the node agent reads for pods' /etc/hosts carries them too.
    status, listing = await mesh.api.call("GET", "/api/v1/resources?kind=Service")
    assert status == 200
    assert {item["metadata"]["name"]: item["spec"]["vip"] for item in listing["items"]} == {
        "reviews": reviews,
        "ratings": ratings,
    }
    # And proxies resolve the Service by it.
    await eventually(
        lambda: mesh.controller.state.resolve_service(reviews, "default") is not None,
        what="the mirror to index the allocated vip",
    )


async def test_reapplying_without_vip_keeps_the_vip(mesh: Mesh) -> None:
    await mesh.api.apply(service("reviews"))
    first = await vip_of(mesh, "reviews")

    status, body = await mesh.api.apply(service("reviews"))
    assert status == 200, body
    assert body["results"][0]["action"] == "unchanged"
    status, body = await mesh.api.apply(service("reviews", port=9081))
    assert body["results"][0]["action"] == "configured"

    assert await vip_of(mesh, "reviews") == first


async def test_a_vip_written_by_the_user_is_kept(mesh: Mesh) -> None:
    status, body = await mesh.api.apply(service("edge", vip="10.0.0.5"))
    assert status == 200, body

    assert await vip_of(mesh, "edge") == "10.0.0.5"


async def test_a_vip_another_service_holds_is_refused_naming_it(mesh: Mesh) -> None:
    await mesh.api.apply(service("reviews"))
    taken = await vip_of(mesh, "reviews")

    status, body = await mesh.api.apply(service("ratings", vip=taken), name="ratings.yaml")

    assert status == 422, body
    assert f"{taken} is already the vip of Service/default/reviews" in body["message"]
    assert body["details"][0]["source"] == "ratings.yaml"
    assert body["details"][0]["path"] == "spec.vip"
    status, _ = await mesh.api.call("GET", "/api/v1/resources/Service/default/ratings")
    assert status == 404


async def test_deleting_a_service_frees_its_vip(mesh: Mesh) -> None:
    await mesh.api.apply(service("reviews"))
    freed = await vip_of(mesh, "reviews")

    status, body = await mesh.api.call("DELETE", "/api/v1/resources/Service/default/reviews")
    assert status == 200, body
    assert await mesh.controller.store.get(claim_key(freed)) is None

    status, body = await mesh.api.apply(service("ratings", vip=freed))
    assert status == 200, body


async def test_changing_a_vip_frees_the_old_one(mesh: Mesh) -> None:
    await mesh.api.apply(service("reviews"))
    old = await vip_of(mesh, "reviews")

    status, body = await mesh.api.apply(service("reviews", vip="198.19.255.254"))
    assert status == 200, body
    status, body = await mesh.api.apply(service("ratings", vip=old))
    assert status == 200, body


async def test_concurrent_applies_never_share_a_vip(mesh: Mesh) -> None:
    names = [f"svc-{i}" for i in range(12)]

    answers = await asyncio.gather(*(mesh.api.apply(service(name)) for name in names))

    assert all(status == 200 for status, _ in answers), answers
    vips = [await vip_of(mesh, name) for name in names]
    assert len(set(vips)) == len(vips)


async def test_applies_racing_for_the_same_address_settle_on_distinct_ones(mesh: Mesh) -> None:
    # Every apply starts its search at the same address, so all but one lose the
    # compare on its claim and must read again and pick another.
    store = mesh.controller.store
    batches = [load_documents(service(f"race-{i}"), source="race.yaml") for i in range(4)]

    results = await asyncio.gather(
        *(apply_resources(store, batch, random_start=lambda: 0) for batch in batches)
    )

    assert all(r.results[0].action == "created" for r in results)
    vips = {await vip_of(mesh, f"race-{i}") for i in range(4)}
    assert vips == {f"198.19.0.{i}" for i in range(1, 5)}


async def test_a_service_stored_without_vip_gets_one_when_the_controller_starts(
    mesh: Mesh,
) -> None:
    (legacy,) = load_documents(service("legacy"), source="old.yaml")
    await mesh.controller.store.put(legacy.key, legacy.to_json_bytes())
    await mesh.controller.stop()
    restarted = type(mesh.controller)(mesh.controller.config)
    await restarted.start()
    mesh.controller = restarted

    stored = await restarted.store.get(legacy.key)
    assert stored is not None
    vip = stored_vip(stored.value)
    assert vip is not None
    assert ipaddress.IPv4Address(vip) in SERVICE_VIP_NETWORK
    assert await restarted.store.get(claim_key(vip)) is not None
