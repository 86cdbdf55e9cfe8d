"""Options shared by several verbs, spelled once so that they read the same everywhere."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

DEFAULT_NAMESPACE = "default"


class OutputFormat(StrEnum):
    yaml = "yaml"
    json = "json"
    wide = "wide"
    name = "name"


class DocumentFormat(StrEnum):
    yaml = "yaml"
    json = "json"


KindArgument = Annotated[
    str,
    typer.Argument(
        metavar="KIND",
        help="A kind, by name, plural or short name: Service, services, svc, httproute...",
        show_default=False,
    ),
]

NamespaceOption = Annotated[
    str,
    typer.Option(
        "-n",
        "--namespace",
        metavar="NS",
        help="The namespace. Ignored for cluster-scoped kinds (Namespace).",
    ),
]

AllNamespacesOption = Annotated[
    bool,
    typer.Option(
        "-A",
        "--all-namespaces",
        help="Every namespace; adds a NAMESPACE column.",
    ),
]

FilenameOption = Annotated[
    list[str],
    typer.Option(
        "-f",
        "--filename",
        metavar="FILE|DIR|-",
        help="A YAML or JSON file; a directory (its *.yaml, *.yml, *.json, in name order); "
        "or - for standard input. Repeat to give several.",
        show_default=False,
    ),
]
