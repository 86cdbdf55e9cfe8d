"""Meshes for the compiler's unit tests: YAML in, a `MeshState` out, and the pieces
several of them start from (a Service and its Workloads, a traffic split of reviews)."""

from __future__ import annotations

from mycelium.api.loading import load_documents
from mycelium.control.state import MeshState
from mycelium.discovery.protocol import NodeInfo


def mesh(*yaml_texts: str) -> MeshState:
    state = MeshState()
    for resource in load_documents("\n".join(yaml_texts), source="test.yaml"):
        state.put(resource)
    return state


def service(name: str, ns: str = "default", port: int = 9080, extra: str = "") -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}}}]
{extra}"""


def workload(name: str, app: str, address: str, version: str = "v1", sa: str = "default") -> str:
    return f"""---
apiVersion: mycelium.io/v1
kind: Workload
metadata: {{name: {name}, namespace: default, labels: {{app: {app}, version: {version}}}}}
spec: {{address: {address}, serviceAccount: {sa}}}
"""


REVIEWS_SPLIT = (
    service("reviews")
    + workload("reviews-v1-0", "reviews", "198.18.0.1", "v1", "reviews")
    + workload("reviews-v2-0", "reviews", "198.18.0.2", "v2", "reviews")
    + """---
apiVersion: mycelium.io/v1
kind: DestinationPolicy
metadata: {name: reviews}
spec:
  host: reviews
  loadBalancer: {type: LEAST_REQUEST}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: mycelium.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{name: reviews}]
  rules:
  - matches: [{headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: reviews, subset: v2}]
  - backendRefs: [{name: reviews, subset: v1, weight: 90}, {name: reviews, subset: v2, weight: 10}]
    timeout: 2s
    retries: {attempts: 2, perTryTimeout: 500ms}
"""
)

CALLER = NodeInfo(
    id="productpage-0", namespace="default", workload="productpage-0", labels={"app": "productpage"}
)
