"""Deployments in Kubernetes' shape: a usual manifest loads with the runtime's defaults,
and what the runtime could not honour is refused with the field and a sentence."""

from __future__ import annotations

import pytest

from mycelium.api.deployment import Deployment
from mycelium.api.errors import ResourceValidationError
from mycelium.api.loading import load_documents

REVIEWS = """
apiVersion: mycelium.io/v1
kind: Deployment
metadata: {{name: reviews-v2, namespace: bookinfo}}
spec:
{spec}
"""
TEMPLATE = """  template:
    metadata:
      labels: {app: reviews, version: v2}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
        - name: reviews
          command: [python3, reviews.py]
          ports: [{containerPort: 9080, name: http}]
"""


def load(spec: str) -> Deployment:
    [resource] = load_documents(REVIEWS.format(spec=spec), source="mesh.yaml")
    assert isinstance(resource, Deployment)
    return resource


def refusal(spec: str) -> tuple[str, str]:
    with pytest.raises(ResourceValidationError) as refused:
        load(spec)
    [issue] = refused.value.issues
    return issue.path, issue.message


def test_a_usual_deployment_loads_with_the_runtimes_defaults() -> None:
    deployment = load(TEMPLATE)

    assert deployment.spec.replicas == 1
    pod = deployment.spec.template.spec
    assert pod.restart_policy == "OnFailure"  # a job's exit 0 ends its pod
    assert pod.termination_grace_period_seconds == 10
    assert deployment.spec.container.command == ["python3", "reviews.py"]
    assert deployment.spec.container.ports[0].container_port == 9080


def test_a_readiness_probe_takes_exactly_one_way_to_ask() -> None:
    probe = "          readinessProbe: {httpGet: {path: /health, port: 9080}, periodSeconds: 2}\n"
    deployment = load(TEMPLATE + probe)
    readiness = deployment.spec.container.readiness_probe
    assert readiness is not None
    assert readiness.http_get is not None
    assert readiness.period_seconds == 2

    both = "          readinessProbe: {httpGet: {port: 9080}, tcpSocket: {port: 9080}}\n"
    path, message = refusal(TEMPLATE + both)
    assert path == "spec.template.spec.containers[0].readinessProbe"
    assert "exactly one of httpGet, tcpSocket or exec; got httpGet, tcpSocket" in message


def test_a_second_container_is_refused_the_mesh_adds_the_sidecar() -> None:
    second = "        - {name: cache, command: [redis-server]}\n"
    path, message = refusal(TEMPLATE + second)
    assert path == "spec.template.spec.containers"
    assert "one app container, not 2" in message
    assert "Deployments of their own" in message


def test_a_selector_that_misses_its_own_pods_is_refused() -> None:
    selector = "  selector: {matchLabels: {app: reviews, version: v3}}\n"
    path, message = refusal(selector + TEMPLATE)
    assert path == "spec"
    assert "version=v3 does not match template.metadata.labels" in message


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ("          env: [{name: 9LIVES, value: x}]\n", "env[0].name", "not an environment"),
        (
            "          env: [{name: A, value: x}, {name: A, value: y}]\n",
            "env",
            "set twice: A",
        ),
    ],
)
def test_environment_mistakes_are_named(extra: str, field: str, words: str) -> None:
    path, message = refusal(TEMPLATE + extra)
    assert path == f"spec.template.spec.containers[0].{field}"
    assert words in message


def test_replicas_are_a_small_whole_number() -> None:
    assert refusal('  replicas: "2"\n' + TEMPLATE)[0] == "spec.replicas"
    assert refusal("  replicas: 65\n" + TEMPLATE)[0] == "spec.replicas"
    assert load("  replicas: 0\n" + TEMPLATE).spec.replicas == 0  # scaled to zero


def test_a_gateway_pod_opts_out_of_the_sidecar_and_publishes_a_host_port() -> None:
    gateway = TEMPLATE.replace(
        "      labels: {app: reviews, version: v2}\n",
        "      labels: {app: reviews, version: v2}\n"
        '      annotations: {sidecar.mycelium.io/inject: "false"}\n',
    ).replace("{containerPort: 9080, name: http}", "{containerPort: 8080, hostPort: 18080}")
    deployment = load(gateway)

    assert not deployment.spec.template.metadata.wants_sidecar
    assert deployment.spec.container.ports[0].host_port == 18080
    assert load(TEMPLATE).spec.template.metadata.wants_sidecar


def test_the_inject_annotation_is_true_or_false() -> None:
    path, message = refusal(
        TEMPLATE.replace(
            "      labels: {app: reviews, version: v2}\n",
            "      labels: {app: reviews, version: v2}\n"
            "      annotations: {sidecar.mycelium.io/inject: nope}\n",
        )
    )
    assert path == "spec.template.metadata.annotations"
    assert '"true" or "false"' in message


def test_host_network_is_for_pods_without_a_sidecar() -> None:
    host_network = TEMPLATE.replace(
        "      serviceAccountName: bookinfo-reviews\n",
        "      serviceAccountName: bookinfo-reviews\n      hostNetwork: true\n",
    )
    path, message = refusal(host_network)
    assert path == "spec.template"
    assert "no sidecar intercepts its traffic" in message
    gateway = host_network.replace(
        "      labels: {app: reviews, version: v2}\n",
        "      labels: {app: reviews, version: v2}\n"
        '      annotations: {sidecar.mycelium.io/inject: "false"}\n',
    )
    assert load(gateway).spec.template.spec.host_network
    assert not load(TEMPLATE).spec.template.spec.host_network
