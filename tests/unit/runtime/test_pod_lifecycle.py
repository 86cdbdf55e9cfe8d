"""A pod's life: the sidecar before the app, jobs that complete, crashes restarted with
a growing backoff, stops in the right order, and no app left without its sidecar."""

from __future__ import annotations

from mycelium.runtime.pod_lifecycle import Join, Leave, PodLifecycle, PodPhase, Signal, Start


def running(policy: str = "OnFailure", now: float = 0.0) -> PodLifecycle:
    pod = PodLifecycle(restart_policy=policy, grace_seconds=5.0)  # type: ignore[arg-type]
    assert pod.begin() == [Start("sidecar")]
    assert pod.sidecar_ready(now) == [Start("app")]
    return pod


def serving(now: float = 0.0) -> PodLifecycle:
    """A pod whose app passed its probe: its sidecar joined the mesh."""
    pod = running(now=now)
    assert pod.app_ready(now) == [Join()]
    assert pod.tick(now + 1.0) == []
    assert pod.ready
    return pod


def test_the_app_starts_only_once_its_sidecar_is_ready() -> None:
    pod = PodLifecycle()
    assert pod.begin() == [Start("sidecar")]
    assert pod.phase is PodPhase.STARTING_SIDECAR
    assert pod.sidecar_ready(0.0) == [Start("app")]
    assert pod.phase is PodPhase.RUNNING
    assert not pod.ready
    assert pod.app_ready(1.0) == [Join()]  # only now may peers be sent to it
    assert not pod.ready  # ...and until they have heard, a rollout must not count on it
    assert pod.tick(1.5) == []
    assert not pod.ready
    assert pod.tick(2.0) == []
    assert pod.ready
    assert pod.app_ready(2.5) == []  # once


def test_a_job_that_exits_0_completes_and_its_sidecar_drains_after_it() -> None:
    pod = running()
    assert pod.app_exited(0, 3.0) == [Signal("sidecar")]
    assert pod.phase is PodPhase.DRAINING_SIDECAR
    assert pod.sidecar_exited(0, 3.5) == []
    assert pod.phase is PodPhase.COMPLETED
    assert pod.done


def test_a_crashing_app_restarts_after_a_backoff_that_doubles_up_to_a_minute() -> None:
    pod = running()
    now, waits = 0.0, []
    for _ in range(8):
        assert pod.app_exited(1, now) == []  # the sidecar keeps running
        assert pod.phase is PodPhase.BACKOFF
        assert pod.wake_at is not None
        waits.append(pod.wake_at - now)
        assert pod.tick(pod.wake_at - 0.1) == []  # not yet
        now = pod.wake_at
        assert pod.tick(now) == [Start("app")]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    assert pod.restarts == 8
    assert "exited 1" in pod.reason


def test_an_app_that_ran_a_while_before_failing_starts_the_backoff_over() -> None:
    pod = running()
    pod.app_exited(1, 0.0)
    pod.tick(1.0)
    pod.app_exited(1, 1.0)  # next wait: 2 s
    pod.tick(3.0)
    pod.app_exited(1, 3.0 + 61)  # it ran 61 s: not a crash loop
    assert pod.wake_at == 64.0 + 1


def test_restart_policies_always_and_never() -> None:
    always = running("Always")
    always.app_exited(0, 0.0)
    assert always.phase is PodPhase.BACKOFF  # even a clean exit restarts

    never = running("Never")
    assert never.app_exited(2, 0.0) == [Signal("sidecar")]
    never.sidecar_exited(0, 0.1)
    assert never.phase is PodPhase.FAILED
    assert never.reason == "the app exited 2"
    assert never.failed_by == "app"


def test_a_stop_leaves_the_mesh_then_ends_the_app_kills_it_after_its_grace_then_drains() -> None:
    pod = serving(now=5.0)
    assert pod.stop(10.0) == [Leave()]  # peers stop choosing the pod...
    assert pod.phase is PodPhase.LEAVING
    assert not pod.ready
    assert pod.tick(10.5) == []
    assert pod.tick(11.0) == [Signal("app")]  # ...and a second later the app goes
    assert pod.tick(15.0) == []
    assert pod.tick(16.0) == [Signal("app", kill=True)]
    assert pod.app_exited(-9, 16.1) == [Signal("sidecar")]
    assert pod.sidecar_exited(0, 17.0) == []
    assert pod.phase is PodPhase.STOPPED
    assert pod.stop(18.0) == []  # once


def test_an_app_that_exits_while_its_pod_leaves_the_mesh_lets_the_sidecar_drain() -> None:
    pod = serving()
    assert pod.stop(10.0) == [Leave()]
    assert pod.app_exited(1, 10.2) == [Signal("sidecar")]
    assert pod.sidecar_exited(0, 10.5) == []
    assert pod.phase is PodPhase.STOPPED


def test_a_stop_during_a_backoff_has_no_app_to_wait_for() -> None:
    pod = running()
    pod.app_exited(1, 0.0)
    assert pod.stop(0.5) == [Signal("sidecar")]
    assert pod.tick(5.0) == []  # no restart after a stop
    pod.sidecar_exited(0, 0.6)
    assert pod.phase is PodPhase.STOPPED


def test_an_app_never_runs_without_its_sidecar() -> None:
    pod = running()
    assert pod.sidecar_exited(1, 5.0) == [Signal("app")]
    pod.app_exited(-15, 5.1)
    assert pod.phase is PodPhase.FAILED
    assert pod.reason == "the sidecar exited 1"
    assert pod.failed_by == "sidecar"

    early = PodLifecycle()
    early.begin()
    assert early.sidecar_exited(1, 0.2) == []  # died before it was ready
    assert early.phase is PodPhase.FAILED
    assert early.sidecar_ready(0.3) == []


def test_a_pod_without_a_sidecar_runs_its_app_at_once_and_ends_with_it() -> None:
    pod = PodLifecycle(sidecar=False)
    assert pod.begin(0.0) == [Start("app")]
    assert pod.phase is PodPhase.RUNNING

    assert pod.stop(1.0) == [Signal("app")]  # nothing to leave: a gateway's own drain
    assert pod.app_exited(0, 2.0) == []
    assert pod.phase is PodPhase.STOPPED  # no sidecar to drain


def test_a_crashed_app_leaves_the_mesh_until_it_is_ready_again() -> None:
    pod = serving()
    assert pod.app_exited(1, 3.0) == [Leave()]
    assert pod.tick(4.0) == [Start("app")]
    assert pod.app_ready(4.5) == [Join()]


def test_a_pod_never_ready_stops_without_leaving() -> None:
    pod = running()
    assert pod.stop(1.0) == [Signal("app")]  # it never joined: nothing to wait for
