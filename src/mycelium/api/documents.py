"""A resource's document as people read it: without the fields nobody set.

The store keeps every field of a resource, defaults included (`Resource.to_json_bytes`),
so a served document is full of nulls and empty lists. What `myc get -o yaml`, `describe`
and the dashboard show leaves those out, as kubectl does, but only when that changes
nothing: the kind's model must read the shortened document as the same resource, so that
what is shown can be applied back unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from mycelium.api.errors import ResourceValidationError, UnknownKind
from mycelium.api.kinds import from_json_bytes

# What the REST API adds to a stored resource's metadata: not part of the resource.
SERVED_ONLY = ("revision", "createRevision")


def without_unset(document: dict[str, Any]) -> dict[str, Any]:
    """`document` without null, `{}` and `[]` fields where its kind reads it the same;
    `document` itself when it would not, or when it is not a resource this version
    knows."""
    shortened = _without_empty(document)
    if not isinstance(shortened, dict):
        return document
    try:
        same = _as_resource(shortened) == _as_resource(document)
    except (ResourceValidationError, UnknownKind, KeyError, TypeError):
        return document
    return shortened if same else document


def _as_resource(document: dict[str, Any]) -> object:
    metadata = {k: v for k, v in (document.get("metadata") or {}).items() if k not in SERVED_ONLY}
    data = json.dumps({**document, "metadata": metadata}).encode()
    return from_json_bytes(str(document["kind"]), data)


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _without_empty(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def changed_fields(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every field whose value differs between two documents, as (path, before, after):
    `spec.rules[0].backendRefs[1].weight`, 90, 50. Lists compare item by item; a field
    or item one side lacks is None on that side."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*after, *(k for k in before if k not in after)]
        found: list[tuple[str, Any, Any]] = []
        for key in keys:
            found += changed_fields(
                before.get(key), after.get(key), f"{path}.{key}" if path else key
            )
        return found
    if isinstance(before, list) and isinstance(after, list):
        found = []
        for index in range(max(len(before), len(after))):
            old = before[index] if index < len(before) else None
            new = after[index] if index < len(after) else None
            found += changed_fields(old, new, f"{path}[{index}]")
        return found
    return [] if before == after else [(path, before, after)]
