"""`myc check`: is the mesh healthy right now? Exits non-zero when anything is wrong."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mycelium.api.scalars import parse_duration
from mycelium.cli.checks import Thresholds, evaluate
from mycelium.cli.errors import CliError
from mycelium.cli.settings import settings_of


def _seconds(option: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CliError(f"{option} {value!r}: {exc}") from None


def check_command(
    ctx: typer.Context,
    *,
    ca_warning: Annotated[
        str, typer.Option("--ca-warning", help="Fail when the CA expires within this.")
    ] = "720h",
    max_skew: Annotated[
        str, typer.Option("--max-skew", help="Fail when clocks differ by more than this.")
    ] = "5s",
    stale_after: Annotated[
        str, typer.Option("--stale-after", help="Fail when a proxy leaves a push unanswered.")
    ] = "30s",
) -> None:
    """Check the controller, its CA, the workload certificates and the proxies.

    Fails (exit code 1) when the controller cannot be reached, a clock is skewed, the
    CA or a workload certificate is close to expiry (one that has used three quarters
    of its life has missed its renewal), or a proxy NACKs its config or has left a push
    unanswered. There are no warnings: every problem fails the check.

    [bold]Examples[/]

      myc check
      myc check --ca-warning 2160h --max-skew 1s
    """
    thresholds = Thresholds(
        _seconds("--ca-warning", ca_warning),
        _seconds("--max-skew", max_skew),
        _seconds("--stale-after", stale_after),
    )
    with settings_of(ctx).client() as client:
        sent = time.time()
        facts = client.check_facts()
        received = time.time()
    findings = evaluate(facts, received, received - sent, thresholds)
    typer.echo("OK    controller reachable")
    for finding in findings:
        typer.echo(f"{'OK  ' if finding.ok else 'FAIL'}  {finding.name}: {finding.detail}")
    if not all(f.ok for f in findings):
        raise typer.Exit(1)
