"""Proxies report what they forwarded to the controller, which the dashboard's graph
and `myc stat` / `myc top` read: requests through a real caller sidecar show up as an
edge from the caller's workload through the service to the workloads that answered,
with the counts, success rate and latency the callers saw."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import aiohttp
from tests.support.polling import eventually
from tests.support.proxy_mesh import ProxyMesh

REQUESTS = 20


async def myc(mesh: ProxyMesh, *args: str) -> str:
    env = {
        **os.environ,
        "MYC_CONTROLLER": f"http://127.0.0.1:{mesh.controller.api_port}",
        "MYC_TOKEN": mesh.controller.admin_token,
        "COLUMNS": "200",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mycelium.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_requests_through_a_sidecar_reach_the_graph_and_myc_stat(
    proxy_mesh: ProxyMesh,
) -> None:
    for _ in range(REQUESTS):
        assert (await proxy_mesh.get("/")).status == 200
    await proxy_mesh.get("/?status=503")  # one error, as the app answers it

    traffic = proxy_mesh.controller.discovery.traffic
    grouped = await eventually(
        lambda: traffic.grouped(time.time(), 60, "service").get("reviews.default"),
        timeout=15,
        what="the caller's report",
    )
    assert grouped.requests == REQUESTS + 1
    assert grouped.errors == 1

    stat = json.loads(await myc(proxy_mesh, "stat", "-o", "json"))
    [row] = stat["rows"]
    assert row["name"] == "reviews.default"
    assert row["requests"] == REQUESTS + 1
    assert row["successRate"] == round(1 - 1 / (REQUESTS + 1), 4)
    assert row["p99"] is not None
    top = await myc(proxy_mesh, "top", "svc", "--once", "--window", "60")
    assert "reviews.default" in top
    # -n and -A as kubectl takes them: the default namespace unless told otherwise.
    elsewhere = json.loads(await myc(proxy_mesh, "stat", "-n", "shop", "-o", "json"))
    assert (elsewhere["namespace"], elsewhere["rows"]) == ("shop", [])
    assert await myc(proxy_mesh, "stat", "-n", "shop") == (
        "no traffic reported in namespace shop in the last 60 s\n"
    )
    everywhere = json.loads(await myc(proxy_mesh, "stat", "-A", "-o", "json"))
    assert [r["name"] for r in everywhere["rows"]] == ["reviews.default"]
    by_source = json.loads(await myc(proxy_mesh, "stat", "deploy", "-n", "default", "-o", "json"))
    assert [r["name"] for r in by_source["rows"]] == ["default/productpage-0"]

    url = f"http://127.0.0.1:{proxy_mesh.controller.api_port}/dashboard/api/graph"
    token = {"Authorization": f"Bearer {proxy_mesh.controller.admin_token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=token) as response:
        graph = await response.json()
    ids = {node["id"] for node in graph["nodes"]}
    assert {"workload:default/productpage-0", "service:default/reviews"} <= ids
    assert {"workload:default/reviews-v1", "workload:default/reviews-v2"} & ids
    caller_edge = next(e for e in graph["edges"] if e["source"] == "workload:default/productpage-0")
    assert caller_edge["target"] == "service:default/reviews"
    assert caller_edge["requests"] == REQUESTS + 1
