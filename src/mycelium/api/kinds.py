"""The registry of resource kinds, and decoding of stored resources.

`KINDS` maps each kind name to its model. `resolve_kind` is forgiving, as kubectl is: it
accepts the kind, its lowercase form, its plural and a short name (`svc`, `hr`...).
Documents in files must spell the kind exactly; the aliases are for the command line.
"""

from __future__ import annotations

import pydantic

from mycelium.api.deployment import Deployment
from mycelium.api.diagnostics import problems
from mycelium.api.errors import ResourceValidationError, UnknownKind, ValidationIssue
from mycelium.api.gateway import Gateway
from mycelium.api.meta import KEY_ROOT, Resource
from mycelium.api.namespace import Namespace
from mycelium.api.routing import HTTPRoute, TCPRoute
from mycelium.api.security import AuthorizationPolicy, PeerAuthentication
from mycelium.api.service import Service
from mycelium.api.traffic_policy import DestinationPolicy, RateLimitPolicy
from mycelium.api.workload import Workload

KINDS: dict[str, type[Resource]] = {
    "Namespace": Namespace,
    "Service": Service,
    "Workload": Workload,
    "HTTPRoute": HTTPRoute,
    "TCPRoute": TCPRoute,
    "DestinationPolicy": DestinationPolicy,
    "PeerAuthentication": PeerAuthentication,
    "AuthorizationPolicy": AuthorizationPolicy,
    "RateLimitPolicy": RateLimitPolicy,
    "Gateway": Gateway,
    "Deployment": Deployment,
}

SHORT_NAMES: dict[str, tuple[str, ...]] = {
    "Namespace": ("ns",),
    "Service": ("svc",),
    "Workload": ("wl",),
    "HTTPRoute": ("hr",),
    "TCPRoute": ("tcpr",),
    "DestinationPolicy": ("dp",),
    "PeerAuthentication": ("pa",),
    "AuthorizationPolicy": ("authz", "ap"),
    "RateLimitPolicy": ("rlp",),
    "Gateway": ("gw",),
    "Deployment": ("deploy",),
}


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "o", "u"):
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"


_ALIASES: dict[str, str] = {}
for _kind in KINDS:
    for _alias in (_kind.lower(), _plural(_kind), *SHORT_NAMES[_kind]):
        _ALIASES[_alias] = _kind


def resolve_kind(name: str) -> type[Resource]:
    """The model for `name`: a kind ("HTTPRoute"), lowercase, plural ("httproutes") or
    short name ("hr"), case-insensitively. Raises `UnknownKind` listing the valid names."""
    kind = _ALIASES.get(name.strip().lower())
    if kind is None:
        raise UnknownKind(name, valid_kind_names())
    return KINDS[kind]


def valid_kind_names() -> list[str]:
    """ "HTTPRoute (hr)"-style descriptions of every kind, for messages and help."""
    return [f"{kind} ({', '.join(SHORT_NAMES[kind])})" for kind in KINDS]


def from_json_bytes(kind: str, data: bytes, *, source: str = "stored value") -> Resource:
    """Decode a value written by `Resource.to_json_bytes` as a resource of `kind`.

    Raises `ResourceValidationError` when the bytes are not a valid `kind` (for instance,
    a value written by a newer version with fields this one does not know).
    """
    model = resolve_kind(kind)
    try:
        return model.model_validate_json(data)
    except pydantic.ValidationError as error:
        raise ResourceValidationError(
            ValidationIssue(
                source=source, document=0, resource=None, path=found.path, message=found.message
            )
            for found in problems(error, model)
        ) from None


def parse_store_key(key: str) -> tuple[type[Resource], str, str]:
    """(model, namespace, name) of a store key; namespace is "" for cluster-scoped kinds."""
    parts = key.split("/")
    if len(parts) != 5 or parts[0] != "" or f"/{parts[1]}" != KEY_ROOT:
        raise ValueError(f"{key!r} is not a resource key (/mycelium/<kind>/<namespace>/<name>)")
    model = resolve_kind(parts[2])
    namespace = "" if model.cluster_scoped else parts[3]
    return model, namespace, parts[4]


def from_stored(key: str, value: bytes) -> Resource:
    """Decode the value stored under `key`; the kind is read from the key."""
    model, _, _ = parse_store_key(key)
    return from_json_bytes(model.__name__, value, source=key)
