"""External Services and the namespaces' egress policy, compiled: data in, entries out."""

from __future__ import annotations

from mycelium.api.loading import load_documents
from mycelium.control.compiler import compile_snapshot
from mycelium.control.state import MeshState
from mycelium.discovery.config import parse_entry
from mycelium.discovery.protocol import NodeInfo

EXTERNAL_API = """---
apiVersion: mycelium.io/v1
kind: Service
metadata: {name: example-api, namespace: shop}
spec:
  external: true
  hosts: [api.example.com]
  vip: 198.19.9.9
  ports: [{name: http, port: 80, targetPort: 8080}]
  endpoints:
    - {address: 203.0.113.10}
    - {address: 203.0.113.11, ports: {http: 8081}}
"""

CALLER = NodeInfo(id="cart-0", namespace="shop", workload="cart-0", labels={"app": "cart"})


def mesh(yaml_text: str) -> MeshState:
    state = MeshState()
    for resource in load_documents(yaml_text, source="test.yaml"):
        state.put(resource)
    return state


def accepted(entries: dict[str, object]) -> None:
    """Every entry is one a proxy accepts."""
    for name, entry in entries.items():
        parse_entry(name, entry.body)  # type: ignore[attr-defined]


def test_an_external_service_is_called_in_plaintext_at_its_endpoints() -> None:
    entries = compile_snapshot(mesh(EXTERNAL_API), CALLER, ["api.example.com"])
    accepted(entries)
    route = entries["route/example-api.shop"].body
    assert "api.example.com" in route["hosts"]
    assert route["vip"] == "198.19.9.9"
    assert route["http_rules"][0]["backends"] == [
        {"cluster": "example-api.shop", "port": None, "weight": 1}
    ]
    assert entries["cluster/example-api.shop"].body["mtls"] is False
    endpoints = entries["endpoints/example-api.shop"].body["endpoints"]
    assert [(e["address"], e["ports"], e["mtls"], e["identity"]) for e in endpoints] == [
        ("203.0.113.10", {"80": 8080}, False, ""),
        ("203.0.113.11", {"80": 8081}, False, ""),
    ]
