"""Scraping a proxy's metrics as Prometheus would, parsed with prometheus_client's own
parser: what the metrics tests assert on."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mycelium.proxy.server import ProxyServer


async def scrape(server: ProxyServer, path: str = "/stats/prometheus") -> dict[str, list[Any]]:
    """Every sample of the exposition, by sample name."""
    address = server.bound["metrics"]
    url = f"http://{address.host}:{address.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples
