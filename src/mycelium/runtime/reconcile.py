"""What the node agent should do to make the pods match the Deployments: sans-IO.

`reconcile(deployments, pods)` compares what the manifests ask for with the pods that
exist and returns the next steps, which the agent carries out and then asks again (on
every Deployment change and every pod state change). Rules:

- A pod is named `<deployment>-<template hash>-<ordinal>`: a new template (changed
  command, env, labels, or a `mycelium.io/restartedAt` annotation from `myc restart`)
  means new names, so old and new pods can run side by side.
- Rolling, without losing capacity (Kubernetes' maxSurge 1, maxUnavailable 0): at most
  one pod more than `replicas` exists at a time; an old pod is stopped only once a new
  one is ready to take its place. Steady traffic sees no failed request, as long as
  the sidecars drain what they were serving.
- Scaling down stops the highest ordinals first; scaling up fills the lowest free.
- A pod that ended by itself (a completed job, or a failure under `Never`) is not
  replaced: it stays in the listing as what it ended as, until its Deployment changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from mycelium.api.deployment import Deployment

RESTARTED_AT = "mycelium.io/restartedAt"
HASH_LENGTH = 6


def template_hash(deployment: Deployment) -> str:
    """A short, stable digest of what the pods run (the template, and a restart stamp)."""
    template = deployment.spec.template.model_dump(mode="json", by_alias=True)
    stamp = deployment.metadata.annotations.get(RESTARTED_AT, "")
    text = json.dumps([template, stamp], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


@dataclass(frozen=True, slots=True)
class PodView:
    """What the agent knows of one pod."""

    name: str
    namespace: str
    deployment: str
    template_hash: str
    ordinal: int
    ready: bool = False
    ended: bool = False  # completed or failed by itself: not replaced
    stopping: bool = False  # asked to stop, not gone yet


@dataclass(frozen=True, slots=True)
class CreatePod:
    namespace: str
    deployment: str
    name: str
    template_hash: str
    ordinal: int


@dataclass(frozen=True, slots=True)
class StopPod:
    namespace: str
    name: str
    why: str


type PodStep = CreatePod | StopPod


def pod_name(deployment: str, digest: str, ordinal: int) -> str:
    return f"{deployment}-{digest}-{ordinal}"


def reconcile(deployments: Iterable[Deployment], pods: Iterable[PodView]) -> list[PodStep]:
    """The next steps towards the Deployments, given the pods as they are."""
    wanted = {(d.metadata.namespace, d.metadata.name): d for d in deployments}
    by_deployment: dict[tuple[str, str], list[PodView]] = {}
    for pod in pods:
        by_deployment.setdefault((pod.namespace, pod.deployment), []).append(pod)
    steps: list[PodStep] = []
    for key, current in sorted(by_deployment.items()):
        if key not in wanted:
            steps += [
                StopPod(p.namespace, p.name, "its Deployment was deleted")
                for p in current
                if not p.stopping and not p.ended
            ]
    for key, deployment in sorted(wanted.items()):
        steps += _one(deployment, by_deployment.get(key, []))
    return steps


def _one(deployment: Deployment, pods: list[PodView]) -> list[PodStep]:
    namespace, name = deployment.metadata.namespace, deployment.metadata.name
    digest = template_hash(deployment)
    replicas = deployment.spec.replicas
    live = [p for p in pods if not p.stopping and not p.ended]
    new = sorted((p for p in live if p.template_hash == digest), key=lambda p: p.ordinal)
    old = sorted((p for p in live if p.template_hash != digest), key=lambda p: p.ordinal)
    # Ended pods of this template keep their slot: a completed job is not run again.
    ended_here = [p for p in pods if p.ended and p.template_hash == digest]
    stopping = [p for p in pods if p.stopping]
    steps: list[PodStep] = []

    # Too many of the current template: the highest ordinals go.
    surplus = len(new) + len(ended_here) - replicas
    for pod in reversed(new):
        if surplus <= 0:
            break
        steps.append(StopPod(namespace, pod.name, f"scaled to {replicas}"))
        new.remove(pod)
        surplus -= 1

    # Old pods go as new ones become ready, never below `replicas` ready pods.
    ready = sum(p.ready for p in new) + sum(p.ready for p in old)
    for pod in old:
        others_ready = ready - (1 if pod.ready else 0)
        if not pod.ready or others_ready >= replicas:
            steps.append(StopPod(namespace, pod.name, "replaced by a new template"))
            ready = others_ready
    remaining_old = [p for p in old if all(s.name != p.name for s in steps)]

    # New pods: fill the lowest free ordinals, one beyond `replicas` at most at a time,
    # and only one not yet ready while old pods still serve.
    taken = {p.ordinal for p in new} | {p.ordinal for p in ended_here}
    missing = replicas - len(new) - len(ended_here)
    # Old pods told to stop just now still run until they have drained: count them.
    in_flight = len(new) + len(old) + len(stopping)
    starting = sum(not p.ready for p in new)
    ordinal = 0
    while missing > 0:
        if remaining_old and (starting >= 1 or in_flight >= replicas + 1):
            break
        while ordinal in taken:
            ordinal += 1
        taken.add(ordinal)
        steps.append(CreatePod(namespace, name, pod_name(name, digest, ordinal), digest, ordinal))
        missing -= 1
        in_flight += 1
        starting += 1
    return steps
