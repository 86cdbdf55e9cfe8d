"""`myc describe`: one resource for a human, with what the mesh did with it.

Beyond the resource itself, a Service shows the registered workloads its selector
matches and the connected proxies that hold its configuration; a Workload shows the
Services that select it and the proxy that serves it. Selectors match as the
controller's compiler matches them: every label of a non-empty selector, with the same
value (an empty selector matches nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from mycelium.api.documents import without_unset
from mycelium.cli.columns import NONE, labels_text, name_of, table_columns, table_rows
from mycelium.cli.commands.options import DEFAULT_NAMESPACE, KindArgument, NamespaceOption
from mycelium.cli.errors import ResourceNotFound
from mycelium.cli.kinds import KindInfo, ResourceDoc, resolve
from mycelium.cli.render import console_for, indented, print_fields, print_table, yaml_text
from mycelium.cli.settings import settings_of

if TYPE_CHECKING:
    from mycelium.cli.client import ControllerClient, ProxyStatus

PROXY_HEADERS = ("ID", "WORKLOAD", "ROLE", "STATE", "VERSION ACKED")


def describe_command(
    ctx: typer.Context,
    *,
    kind: KindArgument,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The resource to describe.")],
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Show one resource in detail, with the workloads and proxies behind it.

    Prints the resource's metadata and its spec as YAML. For a Service, also the
    registered workloads its selector matches and the connected proxies that hold its
    configuration, with their sync state; for a Workload, the Services that select it
    and the proxy that serves it. Use it to answer "why does this service get no
    traffic?": no workloads means the selector matches no labels; a proxy in state
    nack rejected the last configuration (see myc status for the reason).

    [bold]Examples[/]

      myc describe service reviews
      myc describe svc ratings -n shop
      myc describe workload reviews-v1-7f9c
      myc describe httproute reviews
    """
    info = resolve(kind)
    scope = namespace if info.namespaced else None
    console = console_for()
    with settings_of(ctx).client() as client:
        try:
            doc = client.get_resource(info.kind, scope, name)
        except ResourceNotFound as exc:
            raise ResourceNotFound(exc.status, exc.code, info.not_found_message(name)) from None
        _print_resource(console, info, doc)
        if info.kind == "Service":
            _print_service_extras(console, client, doc, namespace)
        elif info.kind == "Workload":
            _print_workload_extras(console, client, doc, namespace)


def selector_matches(selector: Any, labels: Any) -> bool:
    if not isinstance(selector, Mapping) or not selector:
        return False
    labels = labels if isinstance(labels, Mapping) else {}
    return all(labels.get(key) == value for key, value in selector.items())


def _metadata(doc: ResourceDoc) -> dict[str, Any]:
    metadata = doc.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _spec(doc: ResourceDoc) -> dict[str, Any]:
    spec = doc.get("spec")
    return spec if isinstance(spec, dict) else {}


def _print_resource(console: Console, info: KindInfo, doc: ResourceDoc) -> None:
    metadata = _metadata(doc)
    fields = [("Name", str(metadata.get("name", NONE)))]
    if info.namespaced:
        fields.append(("Namespace", str(metadata.get("namespace") or NONE)))
    revision = metadata.get("revision")
    created = metadata.get("createRevision")
    revision_text = str(revision if revision is not None else NONE)
    if created is not None and created != revision:
        revision_text += f" (created at {created})"
    fields += [
        ("Kind", str(doc.get("kind", info.kind))),
        ("API Version", str(doc.get("apiVersion", NONE))),
        ("Labels", labels_text(metadata.get("labels"))),
        ("Annotations", labels_text(metadata.get("annotations"))),
        ("Revision", revision_text),
    ]
    print_fields(console, fields)
    spec = without_unset(doc).get("spec")  # the fields set, as kubectl shows them
    if spec:
        console.print(Text("Spec:"))
        console.print(Text(indented(yaml_text(spec)).rstrip("\n")))
    else:
        print_fields(console, [("Spec", NONE)])


def _print_service_extras(
    console: Console, client: ControllerClient, service: ResourceDoc, namespace: str
) -> None:
    name = name_of(service)
    selector = _spec(service).get("selector")
    workloads = [
        doc
        for doc in client.list_resources("Workload", namespace).items
        if selector_matches(selector, _metadata(doc).get("labels"))
    ]
    columns = table_columns("Workload", all_namespaces=False, wide=False)
    _print_section(
        console,
        "Workloads",
        [c.header for c in columns],
        table_rows(workloads, columns),
        empty="<none> (the selector matches no registered workload)"
        if selector
        else "<none> (the Service has no selector)",
    )
    workload_names = {name_of(doc) for doc in workloads}
    topic = f"service:{name}.{namespace}"
    holders = [
        proxy
        for proxy in client.status().proxies
        if topic in proxy.subscriptions
        or (proxy.service == name and proxy.namespace == namespace)
        or _serves(proxy, namespace, workload_names)
    ]
    _print_proxies(console, holders)


def _print_workload_extras(
    console: Console, client: ControllerClient, workload: ResourceDoc, namespace: str
) -> None:
    labels = _metadata(workload).get("labels")
    services = [
        name_of(doc)
        for doc in client.list_resources("Service", namespace).items
        if selector_matches(_spec(doc).get("selector"), labels)
    ]
    print_fields(console, [("Services", ",".join(services) or NONE)])
    serving = [p for p in client.status().proxies if _serves(p, namespace, {name_of(workload)})]
    _print_proxies(console, serving)


def _serves(proxy: ProxyStatus, namespace: str, workloads: set[str]) -> bool:
    """Whether `proxy` is the proxy of one of `workloads` (named `w` or `ns/w`)."""
    if proxy.workload is None:
        return False
    ns, _, bare = proxy.workload.rpartition("/")
    in_namespace = (ns or proxy.namespace) == namespace
    return in_namespace and bare in workloads


def _print_proxies(console: Console, proxies: Sequence[ProxyStatus]) -> None:
    rows = [
        [
            p.id,
            p.workload or NONE,
            p.role or NONE,
            p.state,
            p.version_acked or NONE,
        ]
        for p in proxies
    ]
    _print_section(console, "Proxies", PROXY_HEADERS, rows, empty="<none> connected")


def _print_section(
    console: Console,
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    empty: str,
) -> None:
    if not rows:
        print_fields(console, [(title, empty)])
        return
    console.print(Text(f"{title}:"))
    print_table(console, headers, rows, indent=2)
