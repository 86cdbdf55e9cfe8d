"""The resource API: typed models of every kind, YAML loading, reference checks, schemas.

Everything here is pure: the loader reads the files it is given and the schema exporter
writes the files it is asked to; nothing else does I/O. Import the names below from
`mycelium.api`; the submodules are organised by theme (routing, security...).
"""

from mycelium.api.errors import ResourceValidationError, UnknownKind, ValidationIssue
from mycelium.api.gateway import Gateway
from mycelium.api.kinds import (
    KINDS,
    SHORT_NAMES,
    from_json_bytes,
    from_stored,
    parse_store_key,
    resolve_kind,
)
from mycelium.api.meta import (
    API_VERSION,
    ClusterObjectMeta,
    ObjectMeta,
    Origin,
    Resource,
    kind_prefix,
    store_key,
)
from mycelium.api.namespace import Namespace
from mycelium.api.routing import HTTPRoute, TCPRoute
from mycelium.api.scalars import format_duration, parse_duration
from mycelium.api.security import AuthorizationPolicy, PeerAuthentication
from mycelium.api.service import Service
from mycelium.api.traffic_policy import DestinationPolicy, RateLimitPolicy
from mycelium.api.workload import Workload

__all__ = [
    "API_VERSION",
    "KINDS",
    "SHORT_NAMES",
    "AuthorizationPolicy",
    "ClusterObjectMeta",
    "DestinationPolicy",
    "Gateway",
    "HTTPRoute",
    "Namespace",
    "ObjectMeta",
    "Origin",
    "PeerAuthentication",
    "RateLimitPolicy",
    "Resource",
    "ResourceValidationError",
    "Service",
    "TCPRoute",
    "UnknownKind",
    "ValidationIssue",
    "Workload",
    "format_duration",
    "from_json_bytes",
    "from_stored",
    "kind_prefix",
    "parse_duration",
    "parse_store_key",
    "resolve_kind",
    "store_key",
]
