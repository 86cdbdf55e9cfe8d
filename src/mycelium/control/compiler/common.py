"""What every bundle compiler builds with: the `Bundle` of compiled entries, and the
translations of API pieces that more than one bundle carries (identities, endpoints,
service ports, route matches).

Pure: no I/O, no clock, no randomness. A compiled entry is hashed and serialised once
here, so every proxy that receives it shares the bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from mycelium.discovery import config as cfg
from mycelium.discovery.protocol import canonical_json, encode_entry

DEFAULT_TRUST_DOMAIN = "cluster.local"
# The annotation of a Workload its proxy registered (the value is the proxy's node id):
# such a workload has that proxy in front, so it speaks mTLS.
REGISTERED_BY = "mycelium.io/registered-by"


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    name: str
    version: str
    body: dict[str, Any]
    wire: bytes  # the entry as it travels in a push, serialised once for every proxy


@dataclass(slots=True)
class Bundle:
    """Entries compiled together, and the topics whose change invalidates them."""

    entries: dict[str, CompiledEntry] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    _version: str | None = None

    def add(self, name: str, body: cfg._Body) -> None:
        data = cfg.to_body(body)
        version = hashlib.blake2b(canonical_json(data), digest_size=8).hexdigest()
        self.entries[name] = CompiledEntry(name, version, data, encode_entry(name, version, data))
        self._version = None

    @property
    def version(self) -> str:
        """A hash of the entries' names and versions: equal bundles, equal versions."""
        if self._version is None:
            digest = hashlib.blake2b(digest_size=8)
            for name in sorted(self.entries):
                digest.update(f"{name}={self.entries[name].version};".encode())
            self._version = digest.hexdigest()
        return self._version


def spiffe_id(
    namespace: str, service_account: str, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def workload_endpoint(
    wl: Any, ports: dict[str, int], mtls: bool, *, plaintext_ports: list[int] | None = None
) -> cfg.Endpoint:
    return cfg.Endpoint(
        workload=f"{wl.metadata.namespace}/{wl.metadata.name}",
        address=str(wl.spec.address),
        ports=ports,
        labels=dict(wl.metadata.labels),
        identity=spiffe_id(wl.metadata.namespace, wl.spec.service_account),
        weight=wl.spec.weight,
        healthy=wl.spec.healthy,
        mtls=mtls,
        plaintext_ports=plaintext_ports or [],
    )


def route_ports(service: Any) -> list[cfg.ServicePort]:
    return [
        cfg.ServicePort(name=p.name, port=p.port, protocol=p.protocol, opaque=p.opaque)
        for p in service.spec.ports
    ]


def route_match(m: Any) -> cfg.RouteMatch:
    """An HTTPRoute match as the proxy matches it: the caller's routes and the serving
    side's rate limits both select requests with these."""
    return cfg.RouteMatch(
        path=cfg.StringMatch(type=m.path.type, value=m.path.value) if m.path else None,
        headers=[cfg.KeyValueMatch(name=h.name, value=h.value, type=h.type) for h in m.headers],
        query_params=[
            cfg.KeyValueMatch(name=q.name, value=q.value, type=q.type) for q in m.query_params
        ],
        method=m.method,
    )
