"""Which columns `myc get` shows for each kind, and how a cell is read from a resource.

A table is NAME, NAMESPACE (with `-A`), the kind's own columns, then REVISION: the
store revision of the resource's last change, which stands in for kubectl's AGE because
the store keeps revisions, not timestamps. `-o wide` adds the kind's wide-only columns
and LABELS.

Cells read the resource as the controller serves it (JSON, camelCase fields) and never
fail: a field that is missing shows as `<none>`, so that a table still prints when the
controller is newer than the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mycelium.cli.kinds import ResourceDoc

NONE = "<none>"
ALL_WORKLOADS = "<all>"


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    cell: Callable[[ResourceDoc], str]
    wide_only: bool = False


# --- reading fields -----------------------------------------------------------------


def _field(doc: Mapping[str, Any], *path: str) -> Any:
    value: Any = doc
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _list(doc: Mapping[str, Any], *path: str) -> list[Any]:
    value = _field(doc, *path)
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    if value is None or value in ("", [], {}):
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _joined(values: Iterable[str]) -> str:
    unique = list(dict.fromkeys(v for v in values if v))
    return ",".join(unique) if unique else NONE


def labels_text(labels: Any) -> str:
    """`k=v,k2=v2` in key order, or `<none>`."""
    if not isinstance(labels, Mapping) or not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def name_of(doc: Mapping[str, Any]) -> str:
    return _text(_field(doc, "metadata", "name"))


def namespace_of(doc: Mapping[str, Any]) -> str:
    return _text(_field(doc, "metadata", "namespace"))


def revision_of(doc: Mapping[str, Any]) -> str:
    return _text(_field(doc, "metadata", "revision"))


def _labels(doc: ResourceDoc) -> str:
    return labels_text(_field(doc, "metadata", "labels"))


def _selector(doc: ResourceDoc) -> str:
    return labels_text(_field(doc, "spec", "selector"))


# --- per kind -----------------------------------------------------------------------


def _service_ports(doc: ResourceDoc) -> str:
    ports = []
    for port in _list(doc, "spec", "ports"):
        if not isinstance(port, Mapping):
            continue
        text = f"{port.get('port')}/{port.get('protocol') or 'TCP'}"
        target = port.get("targetPort")
        if target not in (None, port.get("port")):
            text = f"{port.get('port')}:{target}/{port.get('protocol') or 'TCP'}"
        ports.append(text)
    return _joined(ports)


def _workload_selector(doc: ResourceDoc) -> str:
    """A policy's `selector.matchLabels`; no selector means every workload of the namespace."""
    selector = _field(doc, "spec", "selector")
    if selector is None:
        return ALL_WORKLOADS
    return labels_text(_field(selector, "matchLabels")) if isinstance(selector, Mapping) else NONE


def _parent_text(ref: Any, route_namespace: Any) -> str:
    if not isinstance(ref, Mapping):
        return ""
    kind = ref.get("kind") or "Service"
    namespace = ref.get("namespace")
    text = str(ref.get("name") or "?")
    if namespace and namespace != route_namespace:
        text += f".{namespace}"
    if ref.get("port") is not None:
        text += f":{ref['port']}"
    return text if kind == "Service" else f"{kind}/{text}"


def _parents(doc: ResourceDoc) -> str:
    namespace = _field(doc, "metadata", "namespace")
    return _joined(_parent_text(ref, namespace) for ref in _list(doc, "spec", "parentRefs"))


def _backend_text(ref: Any, total_weight: int) -> str:
    """`name[.ns][/subset][:port](share%)`: every backend with its share of its rule's
    traffic, so that a lone backend, a split and a zero weight read the same way."""
    if not isinstance(ref, Mapping):
        return ""
    text = str(ref.get("name") or "?")
    if ref.get("namespace"):
        text += f".{ref['namespace']}"
    if ref.get("subset"):
        text += f"/{ref['subset']}"
    if ref.get("port") is not None:
        text += f":{ref['port']}"
    weight = ref.get("weight", 1)
    if not isinstance(weight, int):
        return text
    share = round(100 * weight / total_weight) if total_weight > 0 else 0
    return f"{text}({share}%)"


def _backends(doc: ResourceDoc) -> str:
    """Each rule's backends, the rules apart by `;`."""
    rules: list[str] = []
    for rule in _list(doc, "spec", "rules"):
        refs = [ref for ref in _list(rule, "backendRefs") if isinstance(ref, Mapping)]
        total = sum(w for ref in refs if isinstance(w := ref.get("weight", 1), int))
        rules.append(_joined(_backend_text(ref, total) for ref in refs))
    shown = [rule for rule in rules if rule != NONE]
    return ";".join(shown) if shown else NONE


def _rule_count(doc: ResourceDoc) -> str:
    return str(len(_list(doc, "spec", "rules")))


def _hostnames(doc: ResourceDoc) -> str:
    return _joined(str(h) for h in _list(doc, "spec", "hostnames"))


def _spec_text(*path: str) -> Callable[[ResourceDoc], str]:
    def cell(doc: ResourceDoc) -> str:
        return _text(_field(doc, "spec", *path))

    return cell


def _spec_list(*path: str) -> Callable[[ResourceDoc], str]:
    def cell(doc: ResourceDoc) -> str:
        return _joined(str(v) for v in _list(doc, "spec", *path))

    return cell


def _subsets(doc: ResourceDoc) -> str:
    return _joined(
        str(s.get("name")) for s in _list(doc, "spec", "subsets") if isinstance(s, Mapping)
    )


def _rate_target(doc: ResourceDoc) -> str:
    ref = _field(doc, "spec", "targetRef")
    if not isinstance(ref, Mapping):
        return NONE
    return f"{ref.get('kind', '?')}/{ref.get('name', '?')}"


def _rate_limit(doc: ResourceDoc) -> str:
    limit = _field(doc, "spec", "limit")
    if not isinstance(limit, Mapping):
        return NONE
    text = f"{limit.get('requests', '?')}/{limit.get('per', '?')}"
    return text + (f" burst {limit['burst']}" if limit.get("burst") is not None else "")


def _gateway_listeners(doc: ResourceDoc) -> str:
    listeners = []
    for listener in _list(doc, "spec", "listeners"):
        if isinstance(listener, Mapping):
            text = f"{listener.get('port')}/{listener.get('protocol')}"
            if listener.get("hostname"):
                text = f"{listener['hostname']}:{text}"
            listeners.append(text)
    return _joined(listeners)


KIND_COLUMNS: dict[str, tuple[Column, ...]] = {
    "Service": (
        # kubectl shows CLUSTER-IP before the ports; the vip is its counterpart.
        Column("VIP", _spec_text("vip")),
        Column("PORTS", _service_ports),
        Column("SELECTOR", _selector),
        Column("HOSTS", _spec_list("hosts"), wide_only=True),
    ),
    "Workload": (
        Column("ADDRESS", _spec_text("address")),
        Column("SERVICE-ACCOUNT", _spec_text("serviceAccount")),
        Column("LABELS", _labels),
        Column("WEIGHT", _spec_text("weight"), wide_only=True),
        Column("HEALTHY", _spec_text("healthy"), wide_only=True),
    ),
    "HTTPRoute": (
        Column("PARENTS", _parents),
        Column("BACKENDS", _backends),
        Column("HOSTNAMES", _hostnames, wide_only=True),
        Column("RULES", _rule_count, wide_only=True),
    ),
    "TCPRoute": (
        Column("PARENTS", _parents),
        Column("BACKENDS", _backends),
        Column("RULES", _rule_count, wide_only=True),
    ),
    "DestinationPolicy": (
        Column("HOST", _spec_text("host")),
        Column("SUBSETS", _subsets),
        Column("LOAD-BALANCER", _spec_text("loadBalancer", "type"), wide_only=True),
    ),
    "PeerAuthentication": (
        Column("MODE", _spec_text("mtls", "mode")),
        Column("SELECTOR", _workload_selector),
    ),
    "AuthorizationPolicy": (
        Column("ACTION", _spec_text("action")),
        Column("SELECTOR", _workload_selector),
        Column("RULES", _rule_count, wide_only=True),
    ),
    "RateLimitPolicy": (
        Column("TARGET", _rate_target),
        Column("LIMIT", _rate_limit),
        Column("SCOPE", _spec_text("scope"), wide_only=True),
    ),
    "Gateway": (
        Column("LISTENERS", _gateway_listeners),
        Column("SELECTOR", _selector),
    ),
    "Namespace": (
        Column("MODE", _spec_text("mode")),
        Column("WAYPOINT", _spec_text("waypoint"), wide_only=True),
    ),
}


def table_columns(kind: str, *, all_namespaces: bool, wide: bool) -> list[Column]:
    """The columns of `myc get KIND` in display order."""
    columns = [Column("NAME", name_of)]
    if all_namespaces:
        columns.append(Column("NAMESPACE", namespace_of))
    columns.extend(c for c in KIND_COLUMNS.get(kind, ()) if wide or not c.wide_only)
    columns.append(Column("REVISION", revision_of))
    if wide and not any(c.header == "LABELS" for c in columns):
        columns.append(Column("LABELS", _labels))
    return columns


def table_rows(docs: Iterable[ResourceDoc], columns: Iterable[Column]) -> list[list[str]]:
    columns = list(columns)
    return [[column.cell(doc) for column in columns] for doc in docs]
