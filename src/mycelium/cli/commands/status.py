"""`myc status`: the controller's health and every connected proxy's sync state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from mycelium.cli.columns import NONE
from mycelium.cli.commands.options import DocumentFormat
from mycelium.cli.render import (
    console_for,
    duration_text,
    json_text,
    print_fields,
    print_table,
    yaml_text,
)
from mycelium.cli.settings import settings_of

if TYPE_CHECKING:
    from mycelium.cli.client import ProxyStatus

PROXY_HEADERS = ("ID", "NAMESPACE", "VERSION SENT", "VERSION ACKED", "STATE", "LAST NACK")


def status_command(
    ctx: typer.Context,
    *,
    output: Annotated[
        DocumentFormat | None,
        typer.Option("-o", "--output", help="Print the status as a document.", show_default=False),
    ] = None,
) -> None:
    """Show the controller and the proxies connected to it.

    The controller's version, store backend, current store revision and uptime, then
    one line per connected proxy: the configuration version last sent to it, the last
    one it acknowledged, and its state: synced (it runs the latest configuration),
    pending (a push is in flight) or nack (it rejected a configuration and keeps
    serving the previous one; LAST NACK says why).

    [bold]Examples[/]

      myc status
      myc status -o json | jq '.proxies[] | select(.state == "nack")'
    """
    settings = settings_of(ctx)
    with settings.client() as client:
        status = client.status()
    if output is not None:
        document = status.document
        typer.echo(
            json_text(document) if output is DocumentFormat.json else yaml_text(document),
            nl=False,
        )
        return
    console = console_for()
    controller = status.controller
    print_fields(
        console,
        [
            ("Controller", settings.controller_url),
            ("Version", controller.version),
            ("Store", controller.store),
            ("Revision", str(controller.revision)),
            ("Uptime", duration_text(controller.uptime_seconds)),
            ("Discovery", controller.discovery_address or NONE),
            ("Workloads", str(status.workloads)),
            ("Proxies", str(len(status.proxies))),
        ],
    )
    if not status.proxies:
        return
    console.print(Text(""))
    print_table(console, PROXY_HEADERS, [_proxy_row(p) for p in status.proxies])


def _proxy_row(proxy: ProxyStatus) -> list[str]:
    nack = NONE
    if proxy.last_nack is not None:
        nack = f"{proxy.last_nack.version}: {proxy.last_nack.reason}"
    return [
        proxy.id,
        proxy.namespace or NONE,
        proxy.version_sent or NONE,
        proxy.version_acked or NONE,
        proxy.state,
        nack,
    ]
