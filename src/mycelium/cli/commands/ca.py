"""`myc ca`: the mesh's certificate authority — its status, a reload after its files
changed (root rotation, a new intermediate), and a new self-signed root to rotate to.

The files live in the controller's `<home>/ca/` (see docs/identity.md): `root.pem`
(the roots proxies trust), `signing.pem` (the signing certificate and its chain) and
`signing.key`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from rich.text import Text

from mycelium.cli.commands.options import DocumentFormat
from mycelium.cli.errors import CliError
from mycelium.cli.render import console_for, json_text, print_fields, print_table, yaml_text
from mycelium.cli.settings import settings_of
from mycelium.control.ca_material import key_pem, new_root, write_private

ca_app = typer.Typer(no_args_is_help=True, help="The mesh's certificate authority.")

ROOT_HEADERS = ("KEY ID", "SUBJECT", "EXPIRES", "LIVE CERTIFICATES")


@ca_app.command("status")
def status_command(
    ctx: typer.Context,
    *,
    output: Annotated[
        DocumentFormat | None,
        typer.Option("-o", "--output", help="Print the status as a document.", show_default=False),
    ] = None,
) -> None:
    """Show the trusted roots, the signer, and which roots live certificates need.

    LIVE CERTIFICATES counts the workload certificates that chain to each root: a root
    can be dropped from the bundle once none does.

    [bold]Examples[/]

      myc ca status
    """
    with settings_of(ctx).client() as client:
        document = client.ca_status()
    _show(document, output)


@ca_app.command("reload")
def reload_command(
    ctx: typer.Context,
    *,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Drop roots even though live workload certificates still chain to them.",
        ),
    ] = False,
    output: Annotated[
        DocumentFormat | None,
        typer.Option("-o", "--output", help="Print the status as a document.", show_default=False),
    ] = None,
) -> None:
    """Read the CA files again and send the trust bundle to every proxy.

    Files that do not fit together are refused and the CA in force stays. Dropping a
    root that live workload certificates still chain to is refused unless --force.

    [bold]Examples[/]

      cat new-root/root.pem >> ~/.mycelium/ca/root.pem && myc ca reload
    """
    with settings_of(ctx).client() as client:
        document = client.reload_ca(force=force)
    _show(document, output)


@ca_app.command("new-root")
def new_root_command(
    *,
    out: Annotated[
        Path, typer.Option("--out", help="A directory for root.pem and root.key (made 0700).")
    ],
    trust_domain: Annotated[
        str, typer.Option("--trust-domain", help="The mesh's trust domain.")
    ] = "cluster.local",
) -> None:
    """Make a new self-signed root to rotate to (offline).

    ECDSA P-256, valid ten years; the key is written 0600 and never printed.

    [bold]Examples[/]

      myc ca new-root --out ./new-root
    """
    certificate_path, key_path = out / "root.pem", out / "root.key"
    if certificate_path.exists() or key_path.exists():
        raise CliError(f"{out} already holds a root: choose an empty directory")
    certificate, key = new_root(trust_domain)
    write_private(key_path, key_pem(key))
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    typer.echo(f"new root {certificate.subject.rfc4514_string()}")
    typer.echo(f"  certificate: {certificate_path}")
    typer.echo(f"  key:         {key_path} (0600)")


def _show(document: dict[str, Any], output: DocumentFormat | None) -> None:
    if output is not None:
        typer.echo(
            json_text(document) if output is DocumentFormat.json else yaml_text(document),
            nl=False,
        )
        return
    console = console_for()
    signer = document["signer"]
    print_fields(
        console,
        [
            ("Trust domain", str(document["trustDomain"])),
            ("Signer", f"{signer['subject']} ({signer['keyId'][:16]})"),
            ("Signer expires", _date(signer["notAfter"])),
            ("Signer's root", str(signer["root"])[:16]),
            ("Intermediates", str(len(signer["chain"]))),
            ("Proxies", str(document["connectedProxies"])),
        ],
    )
    console.print(Text(""))
    rows = [
        [r["keyId"][:16], r["subject"], _date(r["notAfter"]), str(r["certificatesInUse"])]
        for r in document["roots"]
    ]
    print_table(console, ROOT_HEADERS, rows)


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
