"""The `myc` command: the Typer application, its global options and its error boundary.

Each verb lives in its own module under `commands/`; this module assembles them. The
command group is the one place that turns expected failures into kubectl's manners:
any `MeshError` (every `CliError`, an unknown kind, a controller that fails to start)
prints `error: <sentence>` on stderr and exits 1 without a traceback; usage errors keep
exit code 2; Ctrl-C exits 130 and a closed pipe exits 1, quietly (Typer does both).
Anything else is a bug and keeps its traceback, without local variables, which could
hold the admin token.

Imports stay light so that `myc --help` is fast: aiohttp and the resource models are
imported by the commands that use them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from typer.core import TyperGroup

from mycelium.cli.commands import (
    apply,
    ca,
    check,
    controller,
    dashboard,
    delete,
    describe,
    gateway,
    get,
    metrics,
    pods,
    proxy,
    stat,
    status,
    tap,
    token,
    version,
)
from mycelium.cli.errors import CliError
from mycelium.cli.settings import DEFAULT_CONTROLLER_URL, DEFAULT_HOME, CliSettings
from mycelium.errors import MeshError


def report(error: MeshError) -> None:
    """Print an expected error as kubectl does: `error: ...` on stderr."""
    typer.echo(f"error: {error}", err=True)
    if isinstance(error, CliError):
        for line in error.detail_lines():
            typer.echo(f"  {line}", err=True)


class MycGroup(TyperGroup):
    """The root command group; it reports every expected error the same way."""

    def invoke(self, ctx: Any) -> Any:  # Any: the base class's Context type is Typer-private
        try:
            return super().invoke(ctx)
        except MeshError as exc:
            report(exc)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="myc",
    cls=MycGroup,
    help=(
        "Operate a Mycelium service mesh: apply resources, inspect them and the proxies.\n\n"
        "myc talks to a controller's REST API (start one with [bold]myc controller[/]). "
        "The verbs and flags follow kubectl: -n/--namespace, -A/--all-namespaces, "
        "-o yaml|json|wide|name, -f FILE.\n\n"
        "[bold]Examples[/]\n\n"
        "  myc controller &                  # a controller with an embedded store\n"
        "  myc apply -f examples/resources/ # every manifest of a directory\n"
        "  myc get services                  # a table of the default namespace\n"
        "  myc describe service reviews      # workloads and proxies behind it\n"
        "  myc status                        # connected proxies and their versions"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    controller_url: Annotated[
        str,
        typer.Option(
            "--controller",
            envvar="MYC_CONTROLLER",
            metavar="URL",
            help="The controller's REST API.",
        ),
    ] = DEFAULT_CONTROLLER_URL,
    home: Annotated[
        Path,
        typer.Option(
            "--home",
            envvar="MYC_HOME",
            metavar="DIR",
            help="The controller's home; myc reads the admin token from DIR/admin-token "
            "(MYC_TOKEN overrides it).",
        ),
    ] = Path(DEFAULT_HOME),
) -> None:
    ctx.obj = CliSettings(controller_url=checked_url(controller_url), home=home.expanduser())


def checked_url(url: str) -> str:
    """The controller URL, refused at once (usage error) when it cannot be one."""
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed port or IPv6 literal
        usable = False
    if not usable:
        raise typer.BadParameter(
            f"{url!r} is not a controller URL: use http://HOST:PORT, e.g. {DEFAULT_CONTROLLER_URL}",
            param_hint="'--controller'",
        )
    return url


def help_text(doc: str | None) -> str:
    """A docstring as Typer's rich help wants it: prose paragraphs on one line each.

    Typer keeps single line breaks, so source-wrapped prose would break mid-sentence on
    a wide terminal; example blocks (indented paragraphs) keep their lines.
    """
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(
        p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


COMMANDS: dict[str, Callable[..., None]] = {
    "controller": controller.controller_command,
    "proxy": proxy.proxy_command,
    "gateway": gateway.gateway_command,
    "apply": apply.apply_command,
    "get": get.get_command,
    "describe": describe.describe_command,
    "delete": delete.delete_command,
    "status": status.status_command,
    "stat": stat.stat_command,
    "top": stat.top_command,
    "metrics": metrics.metrics_command,
    "check": check.check_command,
    "tap": tap.tap_command,
    "dashboard": dashboard.dashboard_command,
    "version": version.version_command,
    "up": pods.up_command,
    "down": pods.down_command,
    "ps": pods.ps_command,
    "logs": pods.logs_command,
    "scale": pods.scale_command,
    "restart": pods.restart_command,
    "exec": pods.exec_command,
}
for _name, _function in COMMANDS.items():
    app.command(_name, help=help_text(_function.__doc__))(_function)
app.add_typer(token.token_app, name="token")
app.add_typer(ca.ca_app, name="ca")


def main() -> None:
    """Entry point of the `myc` script."""
    app()
