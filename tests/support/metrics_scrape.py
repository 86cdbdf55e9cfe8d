"""Scraping a proxy's metrics as Prometheus would, parsed with prometheus_client's own
parser: what the metrics tests assert on."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from mycelium.control.controller import Controller
from mycelium.proxy.listeners.server import ProxyServer

type Samples = dict[str, list[Any]]


async def scrape(server: ProxyServer, path: str = "/stats/prometheus") -> Samples:
    """Every sample of a proxy's exposition, by sample name."""
    address = server.bound["metrics"]
    return await scrape_url(f"http://{address.host}:{address.port}{path}")


async def scrape_controller(controller: Controller) -> Samples:
    """Every sample of the controller's /metrics; no Authorization header."""
    return await scrape_url(f"http://127.0.0.1:{controller.api_port}/metrics")


async def scrape_url(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [s for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0].value)
