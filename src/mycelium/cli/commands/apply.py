"""`myc apply`: validate manifests locally, then apply them in one transaction."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from mycelium.cli.commands.options import FilenameOption
from mycelium.cli.kinds import qualified_name
from mycelium.cli.manifests import in_namespace, read_manifests, validate_locally
from mycelium.cli.settings import settings_of


def apply_command(
    ctx: typer.Context,
    *,
    filenames: FilenameOption,
    namespace: Annotated[
        str | None,
        typer.Option(
            "-n",
            "--namespace",
            metavar="NS",
            help="Put resources that name no namespace in NS; refuse one that names another.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Validate on the controller too (references to other resources "
            "included) and show what would change, without writing anything.",
        ),
    ] = False,
) -> None:
    """Create or update resources from YAML or JSON files.

    Every file is validated here first, and every problem is reported with its file,
    document, resource and field path; if there is any, nothing is sent. The controller
    then validates the whole batch again (with the references between resources) and
    writes it in one transaction: all of it is applied, or none.
    Each resource is reported as created, configured (changed) or unchanged.

    [bold]Examples[/]

      # one file, a whole directory, or several
      myc apply -f reviews-route.yaml
      myc apply -f examples/resources/
      myc apply -f services.yaml -f routes.yaml

      # from standard input
      cat route.yaml | myc apply -f -

      # what would change?
      myc apply -f routes/ --dry-run

      # into namespace shop (resources that name none)
      myc apply -n shop -f cart.yaml
    """
    files = read_manifests(filenames, sys.stdin)
    validate_locally(files)
    if namespace is not None:
        files = in_namespace(files, namespace)
    with settings_of(ctx).client() as client:
        outcome = client.apply(files, dry_run=dry_run)
    suffix = " (dry run)" if dry_run else ""
    for result in outcome.results:
        typer.echo(f"{qualified_name(result.kind, result.name)} {result.action}{suffix}")
        if dry_run:
            for path, old, new in result.changes:
                typer.echo(f"  {path}: {_value_text(old)} -> {_value_text(new)}")


def _value_text(value: object) -> str:
    """A field's value on one line; None is a field not set."""
    if value is None:
        return "(unset)"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
