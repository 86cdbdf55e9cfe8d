"""Istio's Grafana dashboards, evaluated by a real Prometheus against bookinfo.

Bookinfo runs under `myc up` in both pod runtimes. Debian's Prometheus scrapes it
with the config users start from (examples/observability/prometheus.yml: one job, the
controller's HTTP service discovery, no address written by hand), at a 1 s interval
so the test is quick. Once pages have flowed, every PromQL query of Istio's mesh,
service and workload dashboards (istio_dashboard_queries.yaml: the queries, kept as
they are in Istio's repository) is evaluated with the dashboards' variables set to
bookinfo's values, and must answer with series, as the panels a user opens would
show them; the panels of TCP and of plaintext calls must evaluate (bookinfo has none
of that traffic to show). So
must the alerting rules users write most: success rate by `destination_service_name`
and p99 by `destination_workload`.

Then reviews-v2 is restarted five times over under load: the series of the mesh,
counted by Prometheus, are as many after as before, since the workload labels name
Deployments and not pods.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.support.bookinfo_mesh import (
    RUNTIMES,
    BookinfoMesh,
    SteadyLoad,
    bookinfo_for,
    reviews_route,
)
from tests.support.polling import wait_for
from tests.support.prometheus import PrometheusServer

ROOT = Path(__file__).parents[3]
QUERIES = yaml.safe_load((Path(__file__).parent / "istio_dashboard_queries.yaml").read_text())
EXAMPLE_CONFIG = ROOT / "examples" / "observability" / "prometheus.yml"
WORKLOADS = {"productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3"}
SERVICES = {"productpage", "details", "ratings", "reviews"}
# The dashboards' variables as a user looking at bookinfo sets them: the reviews
# service, productpage's workload (it both serves and calls), every source and
# destination ("All"), and the window Grafana's $__rate_interval would be at a 1 s
# scrape interval.
VARIABLES = {
    "service": "reviews.bookinfo.svc.cluster.local",
    "namespace": "bookinfo",
    "workload": "productpage-v1",
    "qrep": "destination",
    "srcns": ".*",
    "srcwl": ".*",
    "dstns": ".*",
    "dstwl": ".*",
    "dstsvc": ".*",
    "srccluster": ".*",
    "dstcluster": ".*",
    "__rate_interval": "30s",
    "__interval": "15s",
}
VARIABLE = re.compile(r"\$(\w+)")
SCRAPE_SECONDS = 1


def with_variables(expr: str) -> str:
    """Grafana's substitution of the variables, then the few literal rewrites Istio's
    own dashboard test makes (see the data file): they widen a panel's filter to every
    connection security policy and namespace, so a panel shows series whichever it is."""
    text = VARIABLE.sub(lambda found: VARIABLES.get(found.group(1), found.group(0)), expr)
    for old, new in QUERIES["istio_integration_test_substitution"]:
        if not old.startswith("$"):
            text = text.replace(old, new)
    assert "$" not in text, f"a variable left unset in {text}"
    return text


def needs_other_traffic(expr: str) -> bool:
    """A panel bookinfo has nothing for: TCP connections, or calls without mTLS (the
    workload dashboard splits its outgoing requests by whether the peer had a SPIFFE
    ID). Istio's own dashboard test leaves out the same two kinds."""
    return "istio_tcp_" in expr or '_principal!~"spiffe.*"' in expr


def dashboard_queries() -> list[Any]:
    return [
        pytest.param(
            query["expr"],
            needs_other_traffic(query["expr"]),
            id=f"{dashboard['name']}:{query['panel']}:{index}",
        )
        for dashboard in QUERIES["dashboards"]
        for index, query in enumerate(dashboard["queries"])
    ]


class Scraped:
    """A bookinfo mesh, a Prometheus scraping it, and traffic flowing through both."""

    def __init__(self, mesh: BookinfoMesh, prometheus: PrometheusServer) -> None:
        self.mesh = mesh
        self.prometheus = prometheus

    def values(self, promql: str) -> dict[str, float]:
        """A query's samples by their labels' text."""
        return {
            ",".join(f"{k}={v}" for k, v in sorted(row["metric"].items())): float(row["value"][1])
            for row in self.prometheus.query(promql)
        }


@pytest.fixture(scope="module", params=RUNTIMES)
def scraped(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    runtime: str = request.param
    base = tmp_path_factory.mktemp(f"prometheus-{runtime}")
    mesh = bookinfo_for(runtime, base)
    shell = mesh.shell
    config = EXAMPLE_CONFIG.read_text()
    assert "http://127.0.0.1:15014/" in config, "the example's discovery URL moved"
    config = config.replace("http://127.0.0.1:15014/", f"{shell.env['MYC_CONTROLLER']}/")
    config = re.sub(r"(scrape_interval|refresh_interval): \d+s", rf"\1: {SCRAPE_SECONDS}s", config)
    prometheus = PrometheusServer(base / "prometheus", config)
    try:
        mesh.start()
        mesh.apply(reviews_route(v1=34, v2=33, v3=33))
        prometheus.start()
        # Every proxy of the mesh found and scraped: the gateway and six sidecars,
        # and the controller.
        wait_for(
            lambda: len([t for t in prometheus.targets() if t["health"] == "up"]) == 8,
            60,
            "Prometheus scraping the controller and the 7 proxies it discovered",
        )
        # Traffic flows while the panels are looked at, as when a user opens them.
        with SteadyLoad(mesh, workers=1):
            wait_for(
                lambda: _every_workload_called(prometheus), 90, "every workload's traffic scraped"
            )
            yield Scraped(mesh, prometheus)
    finally:
        prometheus.stop()
        shell.down()


def _every_workload_called(prometheus: PrometheusServer) -> bool:
    rows = prometheus.query(
        'sum by (destination_workload) (rate(istio_requests_total{reporter="destination"}[30s]))'
    )
    return {row["metric"].get("destination_workload") for row in rows} >= WORKLOADS


def test_discovery_finds_every_proxy_with_its_pods_labels(scraped: Scraped) -> None:
    targets = scraped.prometheus.targets()
    proxies = [t["labels"] for t in targets if t["labels"].get("role") != "controller"]
    assert {labels["workload"] for labels in proxies} == WORKLOADS | {"ingress-gateway"}
    assert all(labels["namespace"] == "bookinfo" for labels in proxies), proxies
    assert all(
        t["scrapeUrl"].endswith("/stats/prometheus")
        for t in targets
        if t["labels"].get("role") != "controller"
    )


@pytest.mark.parametrize(("expr", "no_traffic_for_it"), dashboard_queries())
def test_every_dashboard_query_answers_for_bookinfo(
    scraped: Scraped, expr: str, no_traffic_for_it: bool
) -> None:
    rows = scraped.prometheus.query(with_variables(expr))
    if no_traffic_for_it:
        return  # it evaluated; bookinfo sends no traffic for it to show
    values = [float(row["value"][1]) for row in rows]
    assert values, f"no series for {with_variables(expr)}"
    assert any(not math.isnan(v) for v in values), (expr, rows)


# What each dashboard's drop-downs must offer for bookinfo (the variables' own queries).
CHOICES = {
    ("service", "service"): "reviews.bookinfo.svc.cluster.local",
    ("service", "srccluster"): "Kubernetes",
    ("service", "srcns"): "bookinfo",
    ("service", "srcwl"): "productpage-v1",
    ("service", "dstcluster"): "Kubernetes",
    ("service", "dstns"): "bookinfo",
    ("service", "dstwl"): "reviews-v2",
    ("workload", "namespace"): "bookinfo",
    ("workload", "workload"): "productpage-v1",
    ("workload", "srcns"): "bookinfo",
    ("workload", "srcwl"): "ingress-gateway",
    ("workload", "dstsvc"): "reviews.bookinfo.svc.cluster.local",
}


def variable_queries() -> list[Any]:
    return [
        pytest.param(dashboard["name"], variable, id=f"{dashboard['name']}:${variable['name']}")
        for dashboard in QUERIES["dashboards"]
        for variable in dashboard["templating"]
        if str(variable.get("query", "")).startswith("query_result(")
    ]


@pytest.mark.parametrize(("dashboard", "variable"), variable_queries())
def test_every_drop_down_offers_bookinfos_names(
    scraped: Scraped, dashboard: str, variable: dict[str, Any]
) -> None:
    """Grafana runs the variable's query and picks its choices out of each series'
    text with the variable's regex."""
    promql = with_variables(variable["query"].removeprefix("query_result(").removesuffix(")"))
    pattern = re.compile(variable["regex"].strip("/"))
    choices = set()
    for row in scraped.prometheus.query(promql):
        text = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(row["metric"].items())) + "}"
        found = pattern.match(text)
        if found:
            choices.add(found.group(1))
    assert CHOICES[(dashboard, variable["name"])] in choices, (promql, choices)


def example_dashboard_queries() -> list[Any]:
    dashboard = json.loads(
        (ROOT / "examples" / "observability" / "grafana-dashboard.json").read_text()
    )
    return [
        pytest.param(target["expr"], id=panel["title"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.mark.parametrize("expr", example_dashboard_queries())
def test_the_example_dashboards_panels_answer_too(scraped: Scraped, expr: str) -> None:
    """examples/observability/grafana-dashboard.json, with every service selected."""
    rows = scraped.prometheus.query(expr.replace("$service", ".*"))
    if "istio_tcp_" in expr or 'response_flags!="-"' in expr:
        return  # bookinfo has no TCP traffic, and no refusals while it runs
    assert rows, expr
    values = {tuple(sorted(row["metric"].items())): float(row["value"][1]) for row in rows}
    if "mutual_tls" in expr:  # bookinfo's every hop is mTLS
        assert set(values.values()) == {1.0}, values
    if "rejected" in expr:  # one series per pod, none rejected a config
        assert len(values) == 7, values
        assert set(values.values()) == {0.0}, values


def test_the_mesh_dashboards_workload_table_lists_bookinfos_workloads(scraped: Scraped) -> None:
    rows = scraped.prometheus.query(
        "sum by (destination_workload, destination_workload_namespace) "
        '(rate(istio_requests_total{reporter=~"source|waypoint"}[1m]))'
    )
    listed = {row["metric"]["destination_workload"] for row in rows}
    assert listed >= WORKLOADS, listed  # Deployments, never pods
    assert {row["metric"]["destination_workload_namespace"] for row in rows} == {"bookinfo"}


def test_success_rate_by_service_name_as_users_alert_on_it(scraped: Scraped) -> None:
    rates = scraped.prometheus.query(
        'sum by (destination_service_name) (rate(istio_requests_total{reporter="destination",'
        'response_code!~"5.."}[1m])) / sum by (destination_service_name) '
        '(rate(istio_requests_total{reporter="destination"}[1m]))'
    )
    by_service = {
        row["metric"]["destination_service_name"]: float(row["value"][1]) for row in rates
    }
    assert set(by_service) == SERVICES, by_service
    assert all(rate == 1.0 for rate in by_service.values()), by_service


def test_p99_latency_by_workload_as_users_alert_on_it(scraped: Scraped) -> None:
    p99 = scraped.prometheus.query(
        "histogram_quantile(0.99, sum by (le, destination_workload) "
        '(rate(istio_request_duration_milliseconds_bucket{reporter="destination"}[1m])))'
    )
    by_workload = {row["metric"]["destination_workload"]: float(row["value"][1]) for row in p99}
    assert set(by_workload) >= WORKLOADS, by_workload
    assert all(0 < ms < 10_000 for ms in by_workload.values()), by_workload


def test_myc_metrics_shows_the_series_prometheus_stores(scraped: Scraped) -> None:
    """For users without a Prometheus: the same series, with the same target labels."""
    shown = scraped.mesh.shell.myc("metrics", "deploy/reviews-v2", "-n", "bookinfo")
    assert shown.returncode == 0, shown.stderr
    ours = {
        frozenset(sample.labels.items())
        for family in text_string_to_metric_families(shown.stdout)
        for sample in family.samples
        if sample.name == "istio_requests_total"
    }
    stored = {
        frozenset((k, v) for k, v in row["metric"].items() if k not in ("__name__", "job"))
        for row in scraped.prometheus.query('istio_requests_total{workload="reviews-v2"}')
    }
    assert ours, shown.stdout[:2000]
    assert ours == stored


def mesh_series(scraped: Scraped) -> set[frozenset[tuple[str, str]]]:
    """Every live istio_* series Prometheus holds, without the target labels that name
    the pod it was scraped from (a restarted pod is scraped at a new one)."""
    return {
        frozenset((k, v) for k, v in row["metric"].items() if k not in ("instance", "pod"))
        for row in scraped.prometheus.query('{__name__=~"istio_.+"}')
    }


def test_series_stay_as_many_over_five_rolling_restarts(scraped: Scraped) -> None:
    mesh = scraped.mesh
    before = mesh_series(scraped)
    for round_ in range(5):
        [old] = [r for r in mesh.shell.pods() if r[1].startswith("reviews-v2-")]
        with SteadyLoad(mesh) as load:
            restarted = mesh.shell.myc("restart", "deploy/reviews-v2", "-n", "bookinfo")
            assert restarted.returncode == 0, restarted.stderr
            mesh.shell.pods_when(
                lambda rows, old=old: (
                    any(
                        r[1].startswith("reviews-v2-") and r[1] != old[1] and r[2] == "1/1"
                        for r in rows
                    )
                    and not any(r[1] == old[1] for r in rows)
                ),
                f"restart {round_ + 1}: the new reviews-v2 pod ready, the old one gone",
                timeout=60,
            )
        failed = [p for p in load.pages if not p.complete]
        assert not failed, f"restart {round_ + 1}: {len(failed)} pages failed: {failed[0]}"
    # The new pod's series appear once it is called and scraped, the old pods' go stale
    # as their targets leave discovery: then the same series as before, and no more.
    try:
        wait_for(lambda: mesh_series(scraped) == before, 60, "the same series again")
    except AssertionError:
        after = mesh_series(scraped)
        new = [dict(s) for s in after - before][:3]
        gone = [dict(s) for s in before - after][:3]
        raise AssertionError(
            f"{len(before)} series before, {len(after)} after; new: {new}; gone: {gone}"
        ) from None
