"""The node agent's next steps: pods created and stopped so that a Deployment's pods
match it, a new template rolled out one pod at a time without losing ready capacity,
and jobs that completed left alone."""

from __future__ import annotations

from dataclasses import replace

from mycelium.api.deployment import Deployment
from mycelium.api.loading import load_documents
from mycelium.runtime.reconcile import (
    RESTARTED_AT,
    CreatePod,
    PodView,
    StopPod,
    reconcile,
    template_hash,
)

DEPLOYMENT = """
apiVersion: mycelium.io/v1
kind: Deployment
metadata: {{name: reviews, annotations: {annotations}}}
spec:
  replicas: {replicas}
  template:
    metadata: {{labels: {{app: reviews}}}}
    spec:
      containers: [{{name: reviews, command: [python3, reviews.py, "{version}"]}}]
"""


def deployment(replicas: int = 2, version: str = "v1", annotations: str = "{}") -> Deployment:
    text = DEPLOYMENT.format(replicas=replicas, version=version, annotations=annotations)
    [found] = load_documents(text, source="mesh.yaml")
    assert isinstance(found, Deployment)
    return found


def pods_of(steps: list[CreatePod | StopPod], *, ready: bool) -> list[PodView]:
    return [
        PodView(s.name, s.namespace, s.deployment, s.template_hash, s.ordinal, ready=ready)
        for s in steps
        if isinstance(s, CreatePod)
    ]


def test_a_new_deployment_gets_its_replicas_and_then_nothing_more() -> None:
    wanted = deployment(replicas=2)
    steps = reconcile([wanted], [])
    digest = template_hash(wanted)
    assert [s.name for s in steps] == [f"reviews-{digest}-0", f"reviews-{digest}-1"]
    assert reconcile([wanted], pods_of(steps, ready=False)) == []


def test_scaling_down_stops_the_highest_ordinals_and_up_fills_the_lowest() -> None:
    three = pods_of(reconcile([deployment(replicas=3)], []), ready=True)
    steps = reconcile([deployment(replicas=1)], three)
    assert [s.name.rsplit("-", 1)[1] for s in steps] == ["2", "1"]
    assert all(isinstance(s, StopPod) for s in steps)

    survivors = [three[0], replace(three[2], ordinal=2)]  # ordinal 1 is free
    grown = reconcile([deployment(replicas=3)], survivors)
    assert [s.ordinal for s in grown if isinstance(s, CreatePod)] == [1]


def test_a_new_template_rolls_out_one_pod_at_a_time_without_losing_capacity() -> None:
    old = pods_of(reconcile([deployment(version="v1")], []), ready=True)
    wanted = deployment(version="v2")
    pods = list(old)
    ready_counts = []
    for _ in range(20):
        steps = reconcile([wanted], pods)
        if not steps and all(p.template_hash == template_hash(wanted) for p in pods):
            break
        stopped = {s.name for s in steps if isinstance(s, StopPod)}
        pods = [p for p in pods if p.name not in stopped]  # they drained and exited
        pods += pods_of(steps, ready=False)
        ready_counts.append(sum(p.ready for p in pods))
        assert len(pods) <= 3, "more than one pod beyond replicas"
        pods = [replace(p, ready=True) for p in pods]  # new pods pass their probes
    assert sorted(p.name for p in pods) == [
        f"reviews-{template_hash(wanted)}-0",
        f"reviews-{template_hash(wanted)}-1",
    ]
    assert min(ready_counts) >= 2  # never fewer ready pods than replicas


def test_myc_restart_is_a_new_template_with_the_same_spec() -> None:
    plain = deployment()
    stamp = f'{{"{RESTARTED_AT}": "2026-11-26T01:40:00Z"}}'
    restarted = deployment(annotations=stamp)
    assert template_hash(plain) != template_hash(restarted)
    assert template_hash(plain) == template_hash(deployment())  # stable


def test_a_completed_job_is_not_run_again_and_a_deleted_deployment_stops_its_pods() -> None:
    wanted = deployment(replicas=1)
    [done] = pods_of(reconcile([wanted], []), ready=False)
    assert reconcile([wanted], [replace(done, ended=True)]) == []

    running = pods_of(reconcile([wanted], []), ready=True)
    steps = reconcile([], running)
    assert steps == [StopPod("default", running[0].name, "its Deployment was deleted")]
