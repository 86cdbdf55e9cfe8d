"""`myc get`: list resources, or show one, as a table, YAML, JSON or names; optionally watch.

With `--watch`, the listing and the stream are stitched at one revision: the stream
starts right after the revision the listing was read at, so no change is missed or
shown twice. In watch mode the table gains an EVENT column (ADDED, MODIFIED, DELETED)
and `-o json` / `-o yaml` print one `{type, object}` event per change, as kubectl's
`--output-watch-events` does; JSON events are one per line, for `jq`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mycelium.api.documents import without_unset
from mycelium.cli.columns import Column, name_of, table_columns, table_rows
from mycelium.cli.commands.options import (
    DEFAULT_NAMESPACE,
    AllNamespacesOption,
    KindArgument,
    NamespaceOption,
    OutputFormat,
)
from mycelium.cli.errors import ResourceNotFound
from mycelium.cli.kinds import KindInfo, ResourceDoc, resolve
from mycelium.cli.render import (
    column_widths,
    console_for,
    json_text,
    print_table,
    yaml_documents,
    yaml_text,
)
from mycelium.cli.settings import settings_of

if TYPE_CHECKING:
    from mycelium.cli.client import ControllerClient, WatchEvent


def get_command(
    ctx: typer.Context,
    *,
    kind: KindArgument,
    name: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="One resource; all of them when omitted."),
    ] = None,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    all_namespaces: AllNamespacesOption = False,
    output: Annotated[
        OutputFormat | None,
        typer.Option(
            "-o",
            "--output",
            help="yaml or json: the full resources; wide: more columns; "
            "name: kind.group/name, one a line.",
            show_default=False,
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option("-w", "--watch", help="After the listing, print each change until Ctrl-C."),
    ] = False,
) -> None:
    """Show resources as a table, YAML, JSON or names.

    Lists the resources of KIND in one namespace (default: default), in every namespace
    with -A, or shows one by NAME. The table's columns depend on the kind: PORTS and
    SELECTOR for a Service, PARENTS and BACKENDS for an HTTPRoute, ADDRESS,
    SERVICE-ACCOUNT and LABELS for a Workload. REVISION is the store revision of the
    resource's last change (it stands in for kubectl's AGE).

    [bold]Examples[/]

      myc get services
      myc get httproutes -A
      myc get svc reviews -o yaml
      myc get workloads -n shop -o wide
      myc get httproutes -o json | jq '.items[].metadata.name'

      # follow changes as they are applied
      myc get httproutes --watch
    """
    info = resolve(kind)
    if name is not None and all_namespaces:
        ctx.fail("a resource cannot be retrieved by name across all namespaces: drop -A, or NAME")
    scope = None if all_namespaces or not info.namespaced else namespace
    with settings_of(ctx).client() as client:
        docs, revision = _read(client, info, scope, name, watch=watch)
        view = _View(info, output, all_namespaces=all_namespaces and info.namespaced)
        if not docs and output is not OutputFormat.json:
            typer.echo(_nothing_found(scope), err=True)
        if not watch:
            view.show(docs, single=name is not None)
            return
        view.start_watch(docs)
        for event in client.watch(info.kind, scope, revision + 1):
            if name is None or event.name == name:
                view.show_event(event)


def _read(
    client: ControllerClient, info: KindInfo, scope: str | None, name: str | None, *, watch: bool
) -> tuple[list[ResourceDoc], int]:
    """The resources to show and the store revision they were read at."""
    if name is not None and not watch:
        try:
            doc = client.get_resource(info.kind, scope, name)
        except ResourceNotFound as exc:
            raise ResourceNotFound(exc.status, exc.code, info.not_found_message(name)) from None
        return [doc], 0
    listing = client.list_resources(info.kind, scope)
    docs = listing.items
    if name is not None:
        docs = [doc for doc in docs if name_of(doc) == name]
        if not docs:
            raise ResourceNotFound(404, "not_found", info.not_found_message(name))
    return docs, listing.revision


def _nothing_found(scope: str | None) -> str:
    if scope is not None:
        return f"No resources found in {scope} namespace."
    return "No resources found."


EVENT_LABELS = ("ADDED", "MODIFIED", "DELETED")


def _event_label(event: WatchEvent) -> str:
    if event.type == "delete":
        return "DELETED"
    created = (event.resource or {}).get("metadata", {}).get("createRevision")
    return "ADDED" if created == event.revision else "MODIFIED"


def _deleted_stub(event: WatchEvent, info: KindInfo) -> ResourceDoc:
    """What is left to show of a deleted resource when the stream does not carry it."""
    metadata: dict[str, Any] = {"name": event.name, "revision": event.revision}
    if event.namespace is not None:
        metadata["namespace"] = event.namespace
    return {"apiVersion": f"{info.group}/v1", "kind": info.kind, "metadata": metadata}


class _View:
    """Prints resources in one output format, for a listing and then for watch events."""

    def __init__(
        self, info: KindInfo, output: OutputFormat | None, *, all_namespaces: bool
    ) -> None:
        self._info = info
        self._output = output
        self._columns: list[Column] = table_columns(
            info.kind, all_namespaces=all_namespaces, wide=output is OutputFormat.wide
        )
        self._console: Console = console_for()
        self._widths: list[int] | None = None

    @property
    def _tabular(self) -> bool:
        return self._output in (None, OutputFormat.wide)

    def show(self, docs: Sequence[ResourceDoc], *, single: bool) -> None:
        if self._output in (OutputFormat.yaml, OutputFormat.json):
            # without the fields nobody set, as kubectl prints them; applies back the same
            docs = [without_unset(doc) for doc in docs]
        match self._output:
            case OutputFormat.yaml:
                if docs:
                    typer.echo(yaml_text(docs[0]) if single else yaml_documents(docs), nl=False)
            case OutputFormat.json:
                document: Any = docs[0] if single else {"items": list(docs)}
                typer.echo(json_text(document), nl=False)
            case OutputFormat.name:
                for doc in docs:
                    typer.echo(self._info.qualified_name(name_of(doc)))
            case _:
                if docs:
                    headers = [c.header for c in self._columns]
                    print_table(self._console, headers, table_rows(docs, self._columns))

    # -- watch -------------------------------------------------------------------------

    def start_watch(self, docs: Sequence[ResourceDoc]) -> None:
        if self._tabular:
            headers = ["EVENT", *(c.header for c in self._columns)]
            rows = self._event_rows("ADDED", docs)
            # Size EVENT for every label now: later rows cannot widen an earlier column.
            self._widths = column_widths(headers, [*rows, [max(EVENT_LABELS, key=len)]])
            print_table(self._console, headers, rows, min_widths=self._widths)
        else:
            for doc in docs:
                self._print_event("ADDED", doc)
        self._flush()

    def show_event(self, event: WatchEvent) -> None:
        label = _event_label(event)
        doc = event.resource if event.resource is not None else _deleted_stub(event, self._info)
        if self._tabular:
            headers = ["EVENT", *(c.header for c in self._columns)]
            print_table(
                self._console,
                headers,
                self._event_rows(label, [doc]),
                min_widths=self._widths,
                show_header=False,
            )
        else:
            self._print_event(label, doc)
        self._flush()

    def _event_rows(self, label: str, docs: Iterable[ResourceDoc]) -> list[list[str]]:
        return [[label, *row] for row in table_rows(docs, self._columns)]

    def _print_event(self, label: str, doc: ResourceDoc) -> None:
        if self._output in (OutputFormat.yaml, OutputFormat.json):
            doc = without_unset(doc)
        match self._output:
            case OutputFormat.json:
                typer.echo(json.dumps({"type": label, "object": doc}, ensure_ascii=False))
            case OutputFormat.yaml:
                typer.echo("---\n" + yaml_text({"type": label, "object": doc}), nl=False)
            case _:
                typer.echo(self._info.qualified_name(name_of(doc)))

    def _flush(self) -> None:
        self._console.file.flush()
