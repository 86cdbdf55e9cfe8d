"""`myc delete`: delete one resource by kind and name, or every resource of some files.

With `-f`, the files are validated locally first (to know which resources they
define), then each resource is deleted in order; one that is missing is reported and
the others are still deleted, and the command exits 1 at the end, as kubectl does.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mycelium.cli.commands.options import DEFAULT_NAMESPACE, NamespaceOption
from mycelium.cli.errors import ResourceNotFound
from mycelium.cli.kinds import resolve
from mycelium.cli.manifests import ResourceRef, read_manifests, validate_locally
from mycelium.cli.settings import settings_of


def delete_command(
    ctx: typer.Context,
    *,
    kind: Annotated[
        str | None,
        typer.Argument(
            metavar="KIND",
            help="A kind, by name, plural or short name: Service, services, svc...",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="The resource to delete.", show_default=False),
    ] = None,
    filenames: Annotated[
        list[str] | None,
        typer.Option(
            "-f",
            "--filename",
            metavar="FILE|DIR|-",
            help="Delete every resource these files define (as for apply).",
            show_default=False,
        ),
    ] = None,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    ignore_not_found: Annotated[
        bool,
        typer.Option("--ignore-not-found", help="A resource that does not exist is not an error."),
    ] = False,
) -> None:
    """Delete resources by kind and name, or those defined in files.

    The deletion is immediate: proxies that held the resource receive new configuration
    without it. A resource that does not exist is an error (exit 1) unless
    --ignore-not-found is given. With -f, the namespace of each resource comes from its
    file (default: default), not from -n.

    [bold]Examples[/]

      myc delete httproute reviews
      myc delete svc ratings -n shop
      myc delete -f reviews-route.yaml
      myc delete -f examples/resources/ --ignore-not-found
    """
    if filenames:
        if kind is not None:
            ctx.fail("give either KIND NAME or -f FILE, not both")
        files = read_manifests(filenames, sys.stdin)
        refs = validate_locally(files)
    else:
        if kind is None or name is None:
            ctx.fail("say what to delete: myc delete KIND NAME, or myc delete -f FILE")
        info = resolve(kind)
        refs = [ResourceRef(info.kind, namespace if info.namespaced else None, name)]

    missing = 0
    with settings_of(ctx).client() as client:
        for ref in refs:
            info = resolve(ref.kind)
            namespace_of_ref = ref.namespace if info.namespaced else None
            try:
                client.delete_resource(info.kind, namespace_of_ref, ref.name)
            except ResourceNotFound:
                if not ignore_not_found:
                    missing += 1
                    typer.echo(f"error: {info.not_found_message(ref.name)}", err=True)
                continue
            typer.echo(f"{info.qualified_name(ref.name)} deleted")
    if missing:
        raise typer.Exit(1)
