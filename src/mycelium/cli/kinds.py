"""What the CLI needs to know about a kind named on the command line.

`resolve` asks the resource API which kind a name means (`svc`, `services`, `Service`
all mean Service) and returns the few facts the commands use: the canonical kind for
the REST API, the plural for kubectl-style messages (`services "x" not found`), the API
group for names such as `service.mycelium.io/reviews`, and whether the kind lives in a
namespace. An unknown name raises the API's `UnknownKind`, whose message lists the
valid kinds. `ResourceDoc` is how the CLI holds a resource: the JSON the API served,
never re-validated, because the CLI only renders it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

API_GROUP = "mycelium.io"

type ResourceDoc = dict[str, Any]
"""A resource as the REST API serves it: JSON with camelCase fields and revisions."""


@dataclass(frozen=True, slots=True)
class KindInfo:
    kind: str  # "HTTPRoute"
    plural: str  # "httproutes"
    namespaced: bool
    group: str = API_GROUP

    def qualified_name(self, name: str) -> str:
        """`httproute.mycelium.io/reviews`, as kubectl prints applied objects."""
        return qualified_name(self.kind, name, self.group)

    def not_found_message(self, name: str) -> str:
        """kubectl's wording: `httproutes "reviews" not found`."""
        return f'{self.plural} "{name}" not found'


def qualified_name(kind: str, name: str, group: str = API_GROUP) -> str:
    return f"{kind.lower()}.{group}/{name}"


def resolve(name: str) -> KindInfo:
    """The kind `name` means; raises `mycelium.api.errors.UnknownKind`."""
    # Imported here: the resource models (pydantic) are not needed for `--help`.
    from mycelium.api import resolve_kind  # noqa: PLC0415

    model = resolve_kind(name)
    kind = str(model.model_fields["kind"].default)
    return KindInfo(kind=kind, plural=_plural(kind), namespaced=not model.cluster_scoped)


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y"):
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"
