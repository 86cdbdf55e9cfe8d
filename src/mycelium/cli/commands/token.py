"""`myc token create`: a join token bound to one workload identity.

A proxy with no certificate yet presents it with its first CSR; the controller's CA
then signs that identity and no other. Tokens are single use and short-lived.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from mycelium.api.scalars import parse_duration
from mycelium.cli.commands.options import DocumentFormat
from mycelium.cli.errors import CliError
from mycelium.cli.render import json_text, yaml_text
from mycelium.cli.settings import settings_of

token_app = typer.Typer(no_args_is_help=True, help="Join tokens for workload identities.")


@token_app.command("create")
def create_command(
    ctx: typer.Context,
    *,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="The workload's namespace.")
    ] = "default",
    service_account: Annotated[
        str, typer.Option("--service-account", help="The workload's service account.")
    ] = "default",
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long the token may be used: 30s, 10m, 1h.")
    ] = "10m",
    output: Annotated[
        DocumentFormat | None,
        typer.Option("-o", "--output", help="Print token, identity and expiry as a document."),
    ] = None,
) -> None:
    """Mint a single-use join token for spiffe://<trust-domain>/ns/<namespace>/sa/<sa>.

    The token alone is printed (for scripts); -o json or -o yaml adds the identity and
    its expiry. It is a secret until used: pass it to the proxy, do not log it.

    [bold]Examples[/]

      myc token create --namespace shop --service-account reviews --ttl 10m
      TOKEN=$(myc token create -n shop --service-account reviews)
    """
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise CliError(f"--ttl {ttl!r}: {exc}") from None
    with settings_of(ctx).client() as client:
        issued = client.create_join_token(namespace, service_account, seconds)
    if output is None:
        typer.echo(issued.token)
        return
    document = {
        "token": issued.token,
        "identity": issued.identity,
        "expiresAt": dt.datetime.fromtimestamp(issued.expires_at, dt.UTC).isoformat(),
    }
    text = json_text(document) if output is DocumentFormat.json else yaml_text(document)
    typer.echo(text, nl=False)
