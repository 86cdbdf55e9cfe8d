"""Tap, the controller's half: which proxies a `myc tap` target means, and one live
tap's relay from those proxies to the REST client.

Proxies in network-namespace pods cannot be reached from the host, but every proxy
keeps a discovery stream to us; so `GET /api/v1/tap` picks the connected proxies the
target names (`select`, pure), sends them `tap_start` on their streams, and relays the
`tap_events` they answer as NDJSON lines (`ActiveTap`), until the tap's maximum, its
time, every proxy's end, or the client's leaving; then it sends `tap_stop`. A proxy
that connects while the tap runs and is named by its target (a rollout's new pod, a
restarted one) joins it for the time that is left: a tap follows a Deployment through a
rollout, as `linkerd viz tap` does, rather than going quiet once the old pods leave.

Targets, as the runtime names things: a Deployment's pods are workloads named
`<deployment>-<hash>-<n>` carrying the template's labels; a Service's are the
workloads its selector matches; a pod is one workload. ztunnels never parse HTTP and
are never tapped.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from mycelium.control.state import MeshState, labels_match
from mycelium.discovery import protocol as p
from mycelium.token_bucket import TokenBucket

# A tap the client does not bound ends after this long anyway (the proxies are told
# so too), so a forgotten terminal cannot keep proxies tapping for ever.
DEFAULT_TAP_SECONDS = 600.0
MAX_TAP_SECONDS = 3600.0
# At most this many taps at once on one controller: each costs every tapped proxy a
# filter per request.
MAX_ACTIVE_TAPS = 16
# Lines waiting for a slow client beyond this are dropped (and counted): the relay
# must not grow without bound because a terminal stopped reading.
MAX_QUEUED_LINES = 10_000

type TargetKind = Literal["deploy", "svc", "pod", "all"]
_KINDS: dict[str, TargetKind] = {
    "deploy": "deploy",
    "deployment": "deploy",
    "svc": "svc",
    "service": "svc",
    "pod": "pod",
    "po": "pod",
}
_TAPPABLE_ROLES = frozenset({"sidecar", "gateway", "waypoint"})


# What a target may be, as every message about one says it.
TARGET_FORMS = "deploy/NAME, svc/NAME, pod/NAME or all"


class TargetError(ValueError):
    """A target that names nothing tappable; the message says what to write."""


@dataclass(frozen=True, slots=True)
class TapTarget:
    kind: TargetKind
    name: str  # "" for all

    @classmethod
    def parse(cls, text: str) -> TapTarget:
        """`deploy/NAME`, `svc/NAME`, `pod/NAME`, or `all` (every proxy)."""
        if text == "all":
            return cls("all", "")
        kind, sep, name = text.partition("/")
        if not sep or not name or kind.lower() not in _KINDS:
            raise TargetError(f"tap target {text!r} must be {TARGET_FORMS}")
        return cls(_KINDS[kind.lower()], name)

    def __str__(self) -> str:
        return "all" if self.kind == "all" else f"{self.kind}/{self.name}"


def select(
    target: TapTarget, namespace: str | None, nodes: list[p.NodeInfo], state: MeshState
) -> list[p.NodeInfo]:
    """The connected proxies `target` names in `namespace` (None: every namespace)."""
    chosen = []
    for node in nodes:
        if node.role not in _TAPPABLE_ROLES:
            continue
        if namespace is not None and node.namespace != namespace:
            continue
        if _selected(target, node, state):
            chosen.append(node)
    return chosen


def _selected(target: TapTarget, node: p.NodeInfo, state: MeshState) -> bool:
    if target.kind == "all":
        return True
    workload = node.workload or ""
    if target.kind == "pod":
        return target.name in (workload, node.id)
    if target.kind == "svc":
        service = state.get("Service", node.namespace, target.name)
        return service is not None and labels_match(service.spec.selector, node.labels)
    # deploy: the runtime's pod names, and the template's labels when we know them
    if not re.fullmatch(rf"{re.escape(target.name)}-[a-z0-9]+-[0-9]+", workload):
        return False
    deployment = state.get("Deployment", node.namespace, target.name)
    if deployment is None:
        return True
    return labels_match(dict(deployment.spec.template.metadata.labels), node.labels)


class ActiveTap:
    """One tap's relay: proxies' batches in, NDJSON-ready dicts out (`lines`).

    `follows` says whether a proxy that connects later is one the target names (None:
    only the proxies it started on); `clock` is monotonic seconds."""

    def __init__(
        self,
        start: p.TapStart,
        proxies: list[p.NodeInfo],
        *,
        follows: Callable[[p.NodeInfo], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.start = start
        self.proxies = {node.id: node for node in proxies}
        self._running = set(self.proxies)
        self._ends: dict[str, str] = {}
        self._follows = follows
        self._clock = clock
        self._deadline = clock() + start.seconds
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent = 0  # request lines
        self.lost_lines = 0  # left out because the client read too slowly
        self._budgets: dict[str, TokenBucket] = {}  # per proxy: events over the rate
        self.ended: str | None = None

    def proxy_joined(self, node: p.NodeInfo) -> p.TapStart | None:
        """A proxy connected while the tap runs: the `tap_start` to send it if the target
        names it (for the time and the number of requests that are left), else None."""
        if self.ended is not None or self._follows is None or node.id in self._running:
            return None
        if not self._follows(node):
            return None
        seconds = self._deadline - self._clock()
        left = self.start.max - self.sent if self.start.max else 0
        if seconds <= 0 or (self.start.max and left <= 0):
            return None
        self.proxies[node.id] = node
        self._running.add(node.id)
        self._ends.pop(node.id, None)
        self._put(
            {
                "type": "proxy_joined",
                "proxy": node.id,
                "namespace": node.namespace,
                "workload": node.workload,
            }
        )
        return p.TapStart(
            id=self.start.id,
            filter=self.start.filter,
            max=left,
            seconds=seconds,
            rate=self.start.rate,
        )

    def events(self, node: p.NodeInfo, message: p.TapEvents) -> int:
        """A batch from a proxy (the discovery server calls this). Returns how many of
        its events were over the tap's rate and refused: the proxy keeps to the rate
        itself, so one that does not is broken or hostile, and must not flood the relay."""
        if self.ended is not None or node.id not in self._running:
            return 0
        budget = self._budgets.get(node.id)
        if budget is None:
            # as the proxy's own bucket (a second's worth at once), plus a batch in
            # flight while the proxy's clock and ours disagree
            burst = self.start.rate + p.MAX_TAP_BATCH
            budget = self._budgets[node.id] = TokenBucket(self.start.rate, burst)
        now = self._clock()
        over = 0
        for event in message.events:
            if self.start.max and self.sent >= self.start.max:
                break
            if not budget.try_take(now):
                over += 1
                continue
            line = msgspec.to_builtins(event)
            line.update(type="request", proxy=node.id, workload=node.workload)
            line["namespace"] = node.namespace
            self._put(line)
            self.sent += 1
        if message.dropped:
            self._put({"type": "dropped", "proxy": node.id, "count": message.dropped})
        if self.start.max and self.sent >= self.start.max:
            self.finish("max")
        elif message.ended:
            self._proxy_ended(node.id, message.ended)
        return over

    def proxy_gone(self, node_id: str) -> None:
        """A tapped proxy's stream closed."""
        if node_id in self._running:
            self._proxy_ended(node_id, "disconnected")

    def _proxy_ended(self, node_id: str, why: str) -> None:
        self._running.discard(node_id)
        self._ends[node_id] = why
        node = self.proxies.get(node_id)
        workload = node.workload if node is not None else ""
        self._put({"type": "proxy_ended", "proxy": node_id, "workload": workload, "reason": why})
        if self._running or self.ended is not None:
            return
        every = set(self._ends.values())
        if every == {"disconnected"} and self._follows is not None:
            return  # pods went away (a rollout?): their successors join as they connect
        # the pods that went away say nothing of why the tap is over; the others do
        said = every - {"disconnected"} or every
        self.finish(said.pop() if len(said) == 1 else "proxies_ended")

    def finish(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
            self.lines.put_nowait({"type": "end", "reason": why, "requests": self.sent})

    @property
    def running(self) -> set[str]:
        """The proxies still tapping (to be told `tap_stop` when the tap ends early)."""
        return set(self._running)

    def _put(self, line: dict[str, Any]) -> None:
        if self.lines.qsize() >= MAX_QUEUED_LINES:
            self.lost_lines += 1
            return
        self.lines.put_nowait(line)
