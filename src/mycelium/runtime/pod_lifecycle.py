"""One pod's life as a state machine: events in, actions out, no processes touched.

The order is the mesh's promise to the app:
- the sidecar starts first, and the app only once the sidecar is ready (so the app's
  first request already goes through the mesh);
- once the app passes its readiness probe (or has none), the sidecar joins the mesh
  (registers the workload), so no peer is sent to an app that cannot answer yet; the
  pod counts as ready `PROPAGATION_SECONDS` later, when the peers have heard (a rollout
  stops an old pod only for a ready new one: without the wait, the old one's leave
  could reach a peer before the new one's join). An app that exits leaves the mesh;
- an app that exits: with 0 under OnFailure (or Never) the pod has completed, a job;
  otherwise it is restarted after a backoff that doubles from 1 s to 60 s and starts
  over once the app has run 60 s; the sidecar keeps running meanwhile;
- on stop the sidecar first leaves the mesh (its workload is deregistered, so peers
  stop sending it new requests, while it still serves what comes) and `PROPAGATION_SECONDS`
  later, once the peers have heard, the app goes (SIGTERM, SIGKILL after its grace
  period), then the sidecar drains; the pod ends when both have exited. Without the
  wait, requests that peers sent before they heard would meet an app already gone;
- a sidecar that dies takes the pod down (stop the app, report failure): an app must
  never run outside the mesh.

A pod without a sidecar (`sidecar=False`: a gateway, which is a proxy itself) starts
its app at once and ends when the app has.

The driver (the node agent) feeds events with the time they happened and carries out
the returned actions; `wake_at` says when to call `tick` next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from mycelium.api.deployment import RestartPolicy

BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# An app that ran this long before failing is not crash-looping: the backoff starts over.
BACKOFF_RESET_AFTER_SECONDS = 60.0


# Long enough for the controller to push a (de)registration to every peer (milliseconds
# on one machine), short enough not to slow a rollout down.
PROPAGATION_SECONDS = 1.0


class PodPhase(StrEnum):
    STARTING_SIDECAR = "starting-sidecar"
    RUNNING = "running"  # the app runs; `ready` says whether it passes its probe
    BACKOFF = "backoff"  # the app failed; it restarts at `wake_at`
    LEAVING = "leaving"  # the sidecar left the mesh; the app stops at `wake_at`
    STOPPING_APP = "stopping-app"
    DRAINING_SIDECAR = "draining-sidecar"
    COMPLETED = "completed"  # the app exited 0 and is not restarted
    FAILED = "failed"  # the app failed and is not restarted, or the sidecar died
    STOPPED = "stopped"  # stopped on request


type Process = Literal["sidecar", "app"]


@dataclass(frozen=True, slots=True)
class Start:
    process: Process


@dataclass(frozen=True, slots=True)
class Signal:
    """SIGTERM (`kill=False`) or SIGKILL (`kill=True`) to a process."""

    process: Process
    kill: bool = False


@dataclass(frozen=True, slots=True)
class Join:
    """Ask the sidecar to register the pod's workload: peers may send to it now."""


@dataclass(frozen=True, slots=True)
class Leave:
    """Ask the sidecar to deregister the pod's workload (and keep serving)."""


type Action = Start | Signal | Join | Leave

FINAL_PHASES = frozenset({PodPhase.COMPLETED, PodPhase.FAILED, PodPhase.STOPPED})


@dataclass(slots=True)
class PodLifecycle:
    restart_policy: RestartPolicy = "OnFailure"
    grace_seconds: float = 10.0
    sidecar: bool = True
    phase: PodPhase = PodPhase.STARTING_SIDECAR
    ready: bool = False
    restarts: int = 0
    last_exit: int | None = None
    reason: str = ""  # why the pod is where it is, for `myc ps`
    failed_by: Process | None = None  # which process ended a FAILED pod
    wake_at: float | None = None  # call `tick` then
    _backoff: float = BACKOFF_FIRST_SECONDS
    _app_started_at: float = 0.0
    _running: set[Process] = field(default_factory=set)
    _joined: bool = False  # the sidecar registered the workload at our request
    _stop_wanted: bool = False
    _outcome: PodPhase = PodPhase.STOPPED  # what a stop in progress will end as

    @property
    def done(self) -> bool:
        return self.phase in FINAL_PHASES

    def begin(self, now: float = 0.0) -> list[Action]:
        """Start the pod: its sidecar first (or the app, in a pod without one)."""
        if not self.sidecar:
            return self._start_app(now)
        self._running.add("sidecar")
        return [Start("sidecar")]

    # --- events -------------------------------------------------------------------------

    def sidecar_ready(self, now: float) -> list[Action]:
        if self.phase is not PodPhase.STARTING_SIDECAR or self._stop_wanted:
            return []
        return self._start_app(now)

    def app_ready(self, now: float) -> list[Action]:
        if self.phase is not PodPhase.RUNNING or self.ready or self._joined:
            return []
        self.reason = ""
        if not self.sidecar:
            self.ready = True
            return []
        self._joined = True
        self.wake_at = now + PROPAGATION_SECONDS  # then ready: see `tick`
        return [Join()]

    def app_exited(self, code: int, now: float) -> list[Action]:
        self._running.discard("app")
        self.ready = False
        self.last_exit = code
        if self.phase in (PodPhase.STOPPING_APP, PodPhase.LEAVING):
            return self._drain_sidecar()
        if self.phase is not PodPhase.RUNNING:
            return []
        policy = self.restart_policy
        if code == 0 and policy != "Always":
            return self._end(PodPhase.COMPLETED, "the app exited 0")
        if policy == "Never":
            self.failed_by = "app"
            return self._end(PodPhase.FAILED, f"the app exited {code}")
        if now - self._app_started_at >= BACKOFF_RESET_AFTER_SECONDS:
            self._backoff = BACKOFF_FIRST_SECONDS
        self.phase = PodPhase.BACKOFF
        self.wake_at = now + self._backoff
        self.reason = f"the app exited {code}; restarting in {self._backoff:g} s"
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_SECONDS)
        return self._leave_mesh()  # until the restarted app is ready again

    def sidecar_exited(self, code: int, now: float) -> list[Action]:
        self._running.discard("sidecar")
        if self.phase is PodPhase.DRAINING_SIDECAR:
            return self._finish()
        # Without its sidecar the app would run outside the mesh: end the pod.
        self._outcome = PodPhase.FAILED
        self.failed_by = "sidecar"
        self.reason = f"the sidecar exited {code}"
        self._stop_wanted = True
        if "app" in self._running:
            return self._signal_app(now)
        return self._finish()

    def stop(self, now: float) -> list[Action]:
        """Stop on request: the app first, then the sidecar drains."""
        if self.done or self._stop_wanted:
            return []
        self._stop_wanted = True
        self._outcome = PodPhase.STOPPED
        self.reason = "stopped"
        if "app" in self._running:
            if self._joined and "sidecar" in self._running:
                self.phase = PodPhase.LEAVING
                self.ready = False
                self.wake_at = now + PROPAGATION_SECONDS
                return self._leave_mesh()
            return self._signal_app(now)
        return self._drain_sidecar()

    def tick(self, now: float) -> list[Action]:
        """The time `wake_at` asked for has come (or passed)."""
        if self.wake_at is None or now < self.wake_at:
            return []
        self.wake_at = None
        if self.phase is PodPhase.BACKOFF:
            self.restarts += 1
            return self._start_app(now)
        if self.phase is PodPhase.LEAVING:
            return self._signal_app(now)
        if self.phase is PodPhase.RUNNING and self._joined:
            self.ready = True  # the peers have heard of the join
            return []
        if self.phase is PodPhase.STOPPING_APP and "app" in self._running:
            return [Signal("app", kill=True)]  # past its grace period
        return []

    # --- steps --------------------------------------------------------------------------

    def _start_app(self, now: float) -> list[Action]:
        self.phase = PodPhase.RUNNING
        self.ready = False
        self._app_started_at = now
        self._running.add("app")
        return [Start("app")]

    def _leave_mesh(self) -> list[Action]:
        if not self._joined:
            return []
        self._joined = False
        return [Leave()]

    def _signal_app(self, now: float) -> list[Action]:
        self.phase = PodPhase.STOPPING_APP
        self.wake_at = now + self.grace_seconds
        return [Signal("app")]

    def _drain_sidecar(self) -> list[Action]:
        self.wake_at = None
        if "sidecar" not in self._running:
            return self._finish()
        self.phase = PodPhase.DRAINING_SIDECAR
        return [Signal("sidecar")]

    def _end(self, outcome: PodPhase, reason: str) -> list[Action]:
        """The app is gone for good: drain the sidecar, then end as `outcome`."""
        self._outcome = outcome
        self.reason = reason
        self._stop_wanted = True
        return self._drain_sidecar()

    def _finish(self) -> list[Action]:
        self.phase = self._outcome
        self.wake_at = None
        self.ready = False
        return []
