"""What `myc get -o yaml`, `describe` and the dashboard show of a stored resource."""

from __future__ import annotations

import json

from mycelium.api.documents import changed_fields, without_unset
from mycelium.api.loading import load_documents

# A route to one port of reviews, everything else left to its defaults.
ROUTE = (
    "{apiVersion: mycelium.io/v1, kind: HTTPRoute, metadata: {name: reviews}, spec: "
    "{parentRefs: [{name: reviews}], rules: [{backendRefs: [{name: reviews, port: 9080}]}]}}"
)


def stored(text: str) -> dict[str, object]:
    [resource] = load_documents(text, source="test.yaml")
    document: dict[str, object] = json.loads(resource.to_json_bytes())
    return document


def test_nulls_and_empty_fields_go_and_what_was_set_stays() -> None:
    document = {**stored(ROUTE), "metadata": {"name": "reviews", "revision": 7}}
    shown = without_unset(document)
    assert shown == {
        "apiVersion": "mycelium.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "revision": 7},
        "spec": {
            "parentRefs": [{"kind": "Service", "name": "reviews"}],
            "rules": [{"backendRefs": [{"name": "reviews", "port": 9080, "weight": 1}]}],
        },
    }


def test_a_document_this_version_cannot_read_is_shown_whole() -> None:
    unknown = {"apiVersion": "mycelium.io/v9", "kind": "Gadget", "spec": {"x": None}}
    assert without_unset(unknown) == unknown


def test_changed_fields_name_each_path_with_both_values() -> None:
    before = {"spec": {"rules": [{"weight": 1, "timeout": None}], "hosts": ["a"]}}
    after = {"spec": {"rules": [{"weight": 90, "timeout": "2s"}], "hosts": ["a", "b"]}}
    assert changed_fields(before, after) == [
        ("spec.rules[0].weight", 1, 90),
        ("spec.rules[0].timeout", None, "2s"),
        ("spec.hosts[1]", None, "b"),
    ]
    assert changed_fields(after, after) == []
