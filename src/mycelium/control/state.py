"""The controller's in-memory mirror of the store, indexed for the compiler.

`MeshState` holds every resource under `/mycelium/` as validated models, plus the few
indexes the compiler asks for (services by host, routes by parent Service or Gateway,
workloads by namespace). The controller feeds it the store's watch events in revision order; the
compiler only reads it. It does no I/O.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from mycelium.api import Resource, from_stored

CLUSTER_DOMAIN = "svc.cluster.local"


def service_key(namespace: str, name: str) -> str:
    """The compiler's name for a service: `<name>.<namespace>`."""
    return f"{name}.{namespace}"


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A selector matches when every one of its labels is present with the same value.

    An empty selector matches nothing: a Service without a selector has no workloads.
    """
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class MeshState:
    def __init__(self) -> None:
        self.revision = 0
        self._by_key: dict[str, Resource] = {}
        self._by_kind: dict[str, dict[tuple[str, str], Resource]] = defaultdict(dict)
        # Secondary indexes, so that compiling one service costs the same in a mesh of
        # ten services or ten thousand.
        self._by_namespace: dict[tuple[str, str], dict[str, Resource]] = defaultdict(dict)
        self._routes_by_parent: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        self._policies_by_host: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._services_by_address: dict[str, set[str]] = defaultdict(set)

    def _index(self, resource: Any, add: bool) -> None:
        ns, name, key = resource.metadata.namespace, resource.metadata.name, resource.key
        names: list[tuple[dict[Any, set[str]], Any]] = []
        if resource.kind in ("HTTPRoute", "TCPRoute"):
            for parent in resource.spec.parent_refs:
                names.append(
                    (
                        self._routes_by_parent,
                        (resource.kind, parent.kind, parent.namespace or ns, parent.name),
                    )
                )
        elif resource.kind == "DestinationPolicy":
            names.append((self._policies_by_host, _host_names(resource.spec.host, ns)))
        elif resource.kind == "Service":
            if resource.spec.vip is not None:
                names.append((self._services_by_address, str(resource.spec.vip)))
            names.extend((self._services_by_address, host) for host in resource.spec.hosts)
        for index, index_key in names:
            if add:
                index[index_key].add(key)
            else:
                index[index_key].discard(key)
                if not index[index_key]:
                    del index[index_key]
        by_ns = self._by_namespace[(resource.kind, ns)]
        if add:
            by_ns[name] = resource
        else:
            by_ns.pop(name, None)

    # --- feeding ------------------------------------------------------------------------

    def put(self, resource: Resource, revision: int | None = None) -> Resource | None:
        """Insert or replace a resource; return the previous version, if any."""
        previous = self._by_key.get(resource.key)
        if previous is not None:
            self._index(previous, add=False)
        self._by_key[resource.key] = resource
        self._by_kind[resource.kind][(resource.metadata.namespace, resource.metadata.name)] = (
            resource
        )
        self._index(resource, add=True)
        if revision is not None:
            self.revision = max(self.revision, revision)
        return previous

    def put_stored(self, key: str, value: bytes, revision: int) -> tuple[Resource | None, Resource]:
        resource = from_stored(key, value)
        return self.put(resource, revision), resource

    def delete(self, key: str, revision: int | None = None) -> Resource | None:
        previous = self._by_key.pop(key, None)
        if previous is not None:
            ident = (previous.metadata.namespace, previous.metadata.name)
            self._by_kind[previous.kind].pop(ident, None)
            self._index(previous, add=False)
        if revision is not None:
            self.revision = max(self.revision, revision)
        return previous

    # --- reading ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, kind: str, namespace: str, name: str) -> Any:
        return self._by_kind[kind].get((namespace, name))

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        return (namespace, name) in self._by_kind[kind]

    def by_key(self, key: str) -> Resource | None:
        return self._by_key.get(key)

    def of_kind(self, kind: str, namespace: str | None = None) -> Iterator[Any]:
        if namespace is not None:
            yield from list(self._by_namespace.get((kind, namespace), {}).values())
            return
        yield from list(self._by_kind[kind].values())

    def all(self) -> Iterable[Resource]:
        return self._by_key.values()

    def services_selecting(self, namespace: str, labels: dict[str, str]) -> list[Any]:
        return [
            svc
            for svc in self.of_kind("Service", namespace)
            if labels_match(svc.spec.selector, labels)
        ]

    def workloads_of(self, service: Any) -> list[Any]:
        return [
            wl
            for wl in self.of_kind("Workload", service.metadata.namespace)
            if labels_match(service.spec.selector, wl.metadata.labels)
        ]

    def http_routes_for(self, namespace: str, name: str) -> list[Any]:
        """HTTPRoutes attached to Service `name` in `namespace`, ordered by namespace/name."""
        return self._routes("HTTPRoute", "Service", namespace, name)

    def tcp_routes_for(self, namespace: str, name: str) -> list[Any]:
        return self._routes("TCPRoute", "Service", namespace, name)

    def routes_of_gateway(self, kind: str, namespace: str, name: str) -> list[Any]:
        """Routes of `kind` (HTTPRoute, TCPRoute) whose parentRefs name Gateway `name`."""
        return self._routes(kind, "Gateway", namespace, name)

    def _routes(self, kind: str, parent_kind: str, namespace: str, name: str) -> list[Any]:
        keys = self._routes_by_parent.get((kind, parent_kind, namespace, name), ())
        return sorted(
            (self._by_key[k] for k in keys),
            key=lambda r: (r.metadata.namespace, r.metadata.name),
        )

    def destination_policy_for(self, namespace: str, name: str) -> Any | None:
        """The DestinationPolicy whose host names this service (first by name if several)."""
        found: list[Any] = [
            self._by_key[k] for k in self._policies_by_host.get((namespace, name), ())
        ]
        found.sort(key=lambda dp: (dp.metadata.namespace != namespace, dp.metadata.name))
        return found[0] if found else None

    def resolve_service(self, reference: str, from_namespace: str) -> Any | None:
        """The Service a caller in `from_namespace` means by `reference`.

        Accepts `name`, `name.ns`, `name.ns.svc`, `name.ns.svc.cluster.local`, a VIP, or
        one of the Service's extra `hosts`; an optional `:port` suffix is ignored.
        """
        host = _strip_port(reference)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return self._service_by_address(host)
        parts = host.split(".")
        if len(parts) == 1:
            candidate = self.get("Service", from_namespace, parts[0])
        elif (
            len(parts) == 2
            or (len(parts) == 3 and parts[2] == "svc")
            or ".".join(parts[2:]) == CLUSTER_DOMAIN
        ):
            candidate = self.get("Service", parts[1], parts[0])
        else:
            candidate = None
        if candidate is not None:
            return candidate
        return self._service_by_address(host)

    def _service_by_address(self, address: str) -> Any | None:
        """The Service with this VIP or extra host name (the first by key if several)."""
        keys = self._services_by_address.get(address)
        return self._by_key[min(keys)] if keys else None

    def resolves_by_name(self, reference: str, service: Any) -> bool:
        """True when `reference` names `service` by its own name (not a VIP or extra host)."""
        name = _strip_port(reference).split(".")[0]
        return name == service.metadata.name and name not in service.spec.hosts


def _host_names(host: str, default_namespace: str) -> tuple[str, str]:
    parts = host.split(".")
    if len(parts) >= 2:
        return parts[1], parts[0]
    return default_namespace, host


def _strip_port(reference: str) -> str:
    if reference.startswith("["):  # [v6]:port
        return reference[1:].split("]", maxsplit=1)[0]
    if reference.count(":") == 1:
        return reference.split(":", maxsplit=1)[0]
    return reference


def all_hosts(service: Any) -> list[str]:
    name, ns = service.metadata.name, service.metadata.namespace
    hosts = [name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.{CLUSTER_DOMAIN}"]
    return hosts + [h for h in service.spec.hosts if h not in hosts]
