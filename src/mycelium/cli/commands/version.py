"""`myc version`: this client's version and, when reachable, the controller's."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mycelium import __version__
from mycelium.cli.commands.options import DocumentFormat
from mycelium.cli.errors import CliError
from mycelium.cli.render import json_text, yaml_text
from mycelium.cli.settings import settings_of


def version_command(
    ctx: typer.Context,
    *,
    client_only: Annotated[
        bool, typer.Option("--client", help="Only this client's version; no network.")
    ] = False,
    output: Annotated[
        DocumentFormat | None,
        typer.Option(
            "-o", "--output", help="Print the versions as a document.", show_default=False
        ),
    ] = None,
) -> None:
    """Print the versions of myc and of the controller.

    The controller's version and store backend come from its /version endpoint, which
    needs no token. When the controller cannot be reached, the client's version is still
    printed and the reason goes to standard error; the exit code stays 0.

    [bold]Examples[/]

      myc version
      myc version --client
      myc --controller http://10.0.0.5:15014 version -o json
    """
    server: dict[str, Any] | None = None
    problem: str | None = None
    if not client_only:
        try:
            with settings_of(ctx).client() as client:
                answer = client.version()
            server = {"version": answer.version, "store": answer.store}
        except CliError as exc:
            problem = str(exc)
    if output is not None:
        document: dict[str, Any] = {"clientVersion": __version__}
        if not client_only:
            document["serverVersion"] = server
        text = json_text(document) if output is DocumentFormat.json else yaml_text(document)
        typer.echo(text, nl=False)
    else:
        typer.echo(f"Client Version: {__version__}")
        if server is not None:
            typer.echo(f"Server Version: {server['version']} (store: {server['store']})")
    if problem is not None:
        typer.echo(f"warning: no server version: {problem}", err=True)
