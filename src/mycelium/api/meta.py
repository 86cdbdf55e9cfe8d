"""The envelope every resource shares: apiVersion, kind, metadata and spec.

`ApiModel` fixes the rules for every model of the API: frozen, unknown fields refused,
strict types (a string where a number belongs is an error; integers are fine where a
float belongs), camelCase names in YAML and JSON, snake_case in Python.

`Resource` is the base of every kind. Its store key and its human reference are derived
from kind, namespace and name. Where a resource was loaded from (`origin`) is kept in a
private attribute: it is not serialized and does not take part in equality, so the same
resource read back from the store compares equal to the one applied.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PrivateAttr,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import ComputedFieldInfo, FieldInfo

from mycelium.api.errors import ValidationIssue
from mycelium.api.scalars import DnsLabel, Labels

API_VERSION: Final = "mycelium.io/v1"
KEY_ROOT = "/mycelium"
# The namespace segment of a cluster-scoped resource's store key. "_" is not a valid
# namespace name, so it cannot collide with one.
CLUSTER_SCOPE_SEGMENT = "_"


def camel_alias(name: str) -> str:
    """The YAML name of a field: `retry_on` -> `retryOn`, `from_` -> `from`.

    Written out rather than pydantic's `to_camel`, which turns `consecutive_5xx_errors`
    into "consecutive5XxErrors" instead of "consecutive5xxErrors".
    """
    first, *rest = name.rstrip("_").split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _field_title(name: str, info: FieldInfo | ComputedFieldInfo) -> str:
    return camel_alias(name)


class ApiModel(BaseModel):
    """Base of every model in the resource API."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        alias_generator=camel_alias,
        populate_by_name=True,
        use_attribute_docstrings=True,
        field_title_generator=_field_title,
    )


# Read-only metadata the controller adds to what it serves (store revisions).
SERVER_FIELDS = frozenset({"revision", "createRevision"})


class ObjectMeta(ApiModel):
    """Identity and labels of a namespaced resource."""

    name: DnsLabel
    """Unique among resources of the same kind in the namespace."""
    namespace: DnsLabel = "default"
    labels: Labels = {}
    """What Service selectors, subsets and policy selectors match."""
    annotations: dict[str, str] = {}
    """Free-form notes for tools and people; Mycelium does not interpret them."""

    @model_validator(mode="before")
    @classmethod
    def _drop_server_fields(cls, data: Any) -> Any:
        # `myc get -o yaml` shows the store revisions; like kubectl's resourceVersion they
        # are the server's to set, so a round trip through `myc apply` ignores them.
        if isinstance(data, dict) and SERVER_FIELDS & data.keys():
            return {k: v for k, v in data.items() if k not in SERVER_FIELDS}
        return data


def _cluster_scoped_namespace(value: str) -> str:
    if value:
        raise ValueError(
            f"this kind is cluster-scoped and has no namespace, got {value!r}: "
            "remove metadata.namespace"
        )
    return value


class ClusterObjectMeta(ObjectMeta):
    """Identity and labels of a cluster-scoped resource: it has no namespace."""

    namespace: Annotated[
        str, AfterValidator(_cluster_scoped_namespace), WithJsonSchema({"const": ""})
    ] = ""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a resource was read from, for error messages."""

    source: str
    """The file name, or a description such as "request body"."""
    document: int
    """The 1-based index of the YAML document in `source`."""
    line: int | None = None
    """The 1-based line where that document starts, when known."""
    field_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    """Field path ("spec.rules[0].backendRefs[1]") -> the line where it is written."""

    def line_of(self, path: str) -> int | None:
        """The line of field `path`, else of its nearest parent written in the file."""
        while path:
            found = self.field_lines.get(path)
            if found is not None:
                return found
            path = parent_path(path)
        return self.line


def parent_path(path: str) -> str:
    """ "spec.rules[0].name" -> "spec.rules[0]" -> "spec.rules" -> "spec" -> ""."""
    if path.endswith("]"):
        return path[: path.rfind("[")]
    return path[: max(path.rfind("."), 0)]


def store_key(kind: str, namespace: str, name: str) -> str:
    """`/mycelium/<kind lowercase>/<namespace>/<name>`; "_" for a cluster-scoped resource."""
    return f"{KEY_ROOT}/{kind.lower()}/{namespace or CLUSTER_SCOPE_SEGMENT}/{name}"


def kind_prefix(kind: str) -> str:
    """The store prefix under which every resource of `kind` lives (ends with '/')."""
    return f"{KEY_ROOT}/{kind.lower()}/"


class Resource(ApiModel):
    """A declarative resource: apiVersion, kind, metadata and spec.

    Subclasses narrow `kind` to a literal and `spec` to their own model; a cluster-scoped
    kind sets `cluster_scoped` and uses `ClusterObjectMeta`.
    """

    cluster_scoped: ClassVar[bool] = False

    api_version: Literal["mycelium.io/v1"] = API_VERSION
    kind: str
    metadata: ObjectMeta
    spec: ApiModel

    _origin: Origin | None = PrivateAttr(default=None)

    @property
    def key(self) -> str:
        """The store key: `/mycelium/<kind lowercase>/<namespace or _>/<name>`."""
        return store_key(self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def ref(self) -> str:
        """ "Kind/namespace/name" (or "Kind/name" when cluster-scoped), for messages."""
        return resource_ref(self.kind, self.metadata.namespace, self.metadata.name)

    @property
    def origin(self) -> Origin | None:
        """Where the loader read this resource; None when it did not come from a file."""
        return self._origin

    def with_origin(self, origin: Origin | None) -> Self:
        """This resource, remembering where it was read (sets it in place and returns self).

        Setting a private attribute does not change the value of a frozen model: origin
        is not part of its fields, its JSON or its equality.
        """
        self._origin = origin
        return self

    def issue(self, path: str, message: str) -> ValidationIssue:
        """A `ValidationIssue` about field `path` of this resource, located by its origin."""
        origin = self._origin
        return ValidationIssue(
            source=origin.source if origin is not None else "<unknown>",
            document=origin.document if origin is not None else 0,
            resource=self.ref,
            path=path,
            message=message,
            line=origin.line_of(path) if origin is not None else None,
        )

    def to_json_bytes(self) -> bytes:
        """The canonical stored form: every field (defaults included), camelCase, sorted keys.

        Storing the full validated object keeps stored values self-describing: a reader
        does not need to know today's defaults to know what was in force.
        """
        data = self.model_dump(mode="json", by_alias=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def __eq__(self, other: object) -> bool:
        # Pydantic compares private attributes too; two reads of the same resource from
        # different files (or from the store) must still be equal.
        if not isinstance(other, Resource):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # lists and dicts inside: not hashable


def repeated[T](values: Iterable[T]) -> list[T]:
    """The values that occur more than once, in order of first occurrence."""
    counts = Counter(values)
    return [value for value, count in counts.items() if count > 1]


def resource_ref(kind: str, namespace: str, name: str) -> str:
    """ "Kind/namespace/name", or "Kind/name" for a cluster-scoped resource."""
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"
