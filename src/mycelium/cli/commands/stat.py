"""`myc stat` and `myc top`: golden metrics of the mesh's traffic, like `linkerd viz stat`.

Both read the controller's memory of recent traffic (the proxies report what they
forwarded every few seconds): requests per second, success rate, p50/p95/p99 latency
and the share of requests carried over mutual TLS, per service, per route or per source
workload. `myc top` redraws until interrupted; `--once` prints one screen and exits.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from mycelium.cli.commands.options import (
    DEFAULT_NAMESPACE,
    AllNamespacesOption,
    DocumentFormat,
    NamespaceOption,
)
from mycelium.cli.render import console_for, json_text, print_table, yaml_text
from mycelium.cli.settings import settings_of

HEADERS = ("NAME", "SUCCESS", "RPS", "P50", "P95", "P99", "MTLS", "REQUESTS")
BY = {"svc": "service", "service": "service", "route": "route", "deploy": "workload",
      "workload": "workload"}  # fmt: skip


def _by(value: str) -> str:
    if value not in BY:
        raise typer.BadParameter(f"{value!r}: choose svc, route or deploy", param_hint="'KIND'")
    return BY[value]


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):g}ms"


def rows_of(answer: dict[str, Any]) -> list[list[str]]:
    return [
        [
            str(row["name"]),
            _percent(row["successRate"]),
            f"{float(row['rps']):.2f}",
            _ms(row["p50"]),
            _ms(row["p95"]),
            _ms(row["p99"]),
            _percent(row["mtls"]),
            str(row["requests"]),
        ]
        for row in answer["rows"]
    ]


def stat_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="svc (default), route or deploy.")] = "svc",
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    all_namespaces: AllNamespacesOption = False,
    window: Annotated[
        float, typer.Option("--window", "-w", help="Seconds of traffic to summarise (5-600).")
    ] = 60.0,
    output: Annotated[
        DocumentFormat | None,
        typer.Option("-o", "--output", help="Print the figures as a document.", show_default=False),
    ] = None,
) -> None:
    """Golden metrics per service, route or source workload over the last minute.

    Success rate, requests per second, p50/p95/p99 latency and the share of requests
    carried over mutual TLS, from what the proxies reported to the controller.

    [bold]Examples[/]

      myc stat                     # per service, namespace default
      myc stat route --window 300  # per route, last five minutes
      myc stat deploy -n shop -o json
      myc stat -A                  # every namespace
    """
    with settings_of(ctx).client() as client:
        answer = client.stat(_by(kind), window, None if all_namespaces else namespace)
    if output is not None:
        text = json_text(answer) if output is DocumentFormat.json else yaml_text(answer)
        typer.echo(text, nl=False)
        return
    if not answer["rows"]:
        where = "" if all_namespaces else f" in namespace {namespace}"
        typer.echo(f"no traffic reported{where} in the last {window:g} s")
        return
    print_table(console_for(), HEADERS, rows_of(answer))


def top_command(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="route (default), svc or deploy.")] = "route",
    *,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    all_namespaces: AllNamespacesOption = False,
    window: Annotated[
        float, typer.Option("--window", "-w", help="Seconds of traffic to summarise (5-600).")
    ] = 10.0,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between redraws.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one screen and exit.")] = False,
) -> None:
    """The busiest routes (or services, or source workloads) right now, redrawn live.

    Every redraw asks the controller for the last few seconds of what the proxies
    reported: success rate, requests per second, latency percentiles and mTLS share,
    the busiest first. Ctrl-C stops it; --once prints one screen for scripts.

    [bold]Examples[/]

      myc top            # routes, last 10 s, every 2 s, until Ctrl-C
      myc top svc --once -A
    """
    by = _by(kind)
    scope = None if all_namespaces else namespace
    console = console_for()
    with settings_of(ctx).client() as client:

        def screen() -> Table:
            answer = client.stat(by, window, scope)
            where = "every namespace" if scope is None else f"namespace {scope}"
            table = Table(*HEADERS, title=f"busiest by {by} in {where}, last {window:g} s")
            for row in rows_of(answer):
                table.add_row(*row)
            return table

        if once:
            console.print(screen())
            return
        with Live(screen(), console=console, auto_refresh=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(screen(), refresh=True)
            except KeyboardInterrupt:
                pass
