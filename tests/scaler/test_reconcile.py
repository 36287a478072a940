"""reconcile: desired vs listed workers -> Start | Stop, and the endpoint status."""

from __future__ import annotations

import msgspec

from scaler.backends.base import WorkerHandle
from scaler.reconcile import Health, Start, Stop, Timing, health, reconcile
from serverless.model import EndpointConfig, EndpointStatus, WorkerBeat, WorkerState

NOW = 1_000_000
T = Timing(stale_after_ms=6_000, ready_timeout_ms=60_000)


def ep(**kw) -> EndpointConfig:
    return EndpointConfig(**{"id": "e", "name": "e", "template_id": "t", "idle_timeout": 5, **kw})


def w(wid: str, state: str | None = "idle", version: int = 1, idle_for_s: float = 0, running=True,
      age_s: float = 100, silent_s: float = 0) -> tuple[WorkerHandle, WorkerBeat | None]:
    handle = WorkerHandle(worker_id=wid, endpoint_id="e", version=version, ref=wid, running=running,
                          started_at=NOW - int(age_s * 1000))
    if state is None:
        return handle, None
    beat = WorkerBeat(id=wid, endpoint="e", state=WorkerState(state), seen_at=NOW - int(silent_s * 1000),
                      idle_since=NOW - int(idle_for_s * 1000) if state == "idle" else 0)
    return handle, beat


def stopped(plan) -> list[str]:
    return sorted(a.handle.worker_id for a in plan.actions if isinstance(a, Stop))


def started(plan) -> int:
    return sum(a.count for a in plan.actions if isinstance(a, Start))


def test_health_states() -> None:
    assert health(*w("a", None, age_s=5), NOW, T) is Health.STARTING
    assert health(*w("a", None, age_s=120), NOW, T) is Health.UNHEALTHY  # never became ready
    assert health(*w("a", "idle", silent_s=30), NOW, T) is Health.UNHEALTHY  # heartbeat stopped
    assert health(*w("a", "running", running=False), NOW, T) is Health.DEAD
    assert health(*w("a", "running"), NOW, T) is Health.RUNNING


def test_start_what_is_missing() -> None:
    plan = reconcile(ep(), 2, [w("a")], NOW, T)
    assert started(plan) == 1 and stopped(plan) == [] and plan.status is EndpointStatus.RUNNING


def test_starting_workers_count_so_nothing_is_double_started() -> None:
    plan = reconcile(ep(), 2, [w("a", None, age_s=1), w("b", None, age_s=1)], NOW, T)
    assert started(plan) == 0 and plan.status is EndpointStatus.INITIALIZING


def test_dead_and_unhealthy_are_stopped_and_replaced() -> None:
    plan = reconcile(ep(), 2, [w("a", running=False), w("b", silent_s=60), w("c")], NOW, T)
    assert stopped(plan) == ["a", "b"] and started(plan) == 1


def test_only_workers_idle_past_idle_timeout_go_longest_idle_first() -> None:
    workers = [w("busy", "running"), w("fresh", idle_for_s=1), w("old", idle_for_s=30), w("older", idle_for_s=60)]
    assert stopped(reconcile(ep(), 1, workers, NOW, T)) == ["old", "older"]
    assert stopped(reconcile(ep(), 3, workers, NOW, T)) == ["older"]


def test_rolling_update_stops_old_version_once_new_ones_are_ready() -> None:
    endpoint = ep(version=2)
    starting = reconcile(endpoint, 1, [w("old", "running", version=1)], NOW, T)
    assert started(starting) == 1 and stopped(starting) == []  # surge first, old keeps serving
    waiting = reconcile(endpoint, 1, [w("old", "running", version=1), w("new", None, version=2, age_s=1)], NOW, T)
    assert started(waiting) == 0 and stopped(waiting) == []
    rolled = reconcile(endpoint, 1, [w("old", "running", version=1), w("new", "idle", version=2)], NOW, T)
    assert stopped(rolled) == ["old"]  # it drains its in-flight job before exiting


def test_pause_or_scale_to_zero_stops_everyone() -> None:
    plan = reconcile(ep(paused=True), 0, [w("a", "running"), w("b")], NOW, T, force_zero=True)
    assert stopped(plan) == ["a", "b"] and plan.status is EndpointStatus.PAUSED
    plan = reconcile(ep(), 0, [w("a")], NOW, T, force_zero=True)
    assert plan.status is EndpointStatus.SCALED_TO_ZERO


def test_no_workers_and_none_wanted_is_scaled_to_zero() -> None:
    assert reconcile(ep(), 0, [], NOW, T).status is EndpointStatus.SCALED_TO_ZERO


def test_a_worker_loading_its_model_is_not_unhealthy_until_the_ready_timeout() -> None:
    loading = w("a", "initializing", silent_s=50, age_s=50)
    assert health(*loading, NOW, T) is Health.STARTING
    assert health(*w("a", "initializing", silent_s=70, age_s=70), NOW, T) is Health.UNHEALTHY


# ---- RunPod-protocol workers ------------------------------------------------------------------

T_RP = Timing(stale_after_ms=6_000, ready_timeout_ms=60_000, stuck_grace_ms=30_000)


def rp(wid: str, silent_s: float = 0, recycle: bool = False, stuck_for_s: float = 0,
       state: str = "idle") -> tuple[WorkerHandle, WorkerBeat]:
    handle, beat = w(wid, state, silent_s=silent_s)
    beat = msgspec.structs.replace(
        beat, interval_ms=10_000, recycle=recycle,
        stuck_since=NOW - int(stuck_for_s * 1000) if stuck_for_s else 0)
    return handle, beat


def test_a_runpod_worker_is_judged_by_its_own_ping_interval() -> None:
    assert health(*rp("a", silent_s=20), NOW, T_RP) is Health.IDLE  # 2 of its 10 s pings
    assert health(*rp("a", silent_s=31), NOW, T_RP) is Health.UNHEALTHY  # 3 missed
    assert health(*rp("a", state="unhealthy"), NOW, T_RP) is Health.UNHEALTHY  # it said so


def test_stop_pod_and_stuck_workers_are_replaced_not_counted() -> None:
    plan = reconcile(ep(workers_min=2), 2, [rp("a", recycle=True), rp("b", stuck_for_s=31),
                                            rp("c", stuck_for_s=5)], NOW, T_RP)
    assert stopped(plan) == ["a", "b"] and started(plan) == 1
    reasons = {a.handle.worker_id: a.reason for a in plan.actions if isinstance(a, Stop)}
    assert "stopPod" in reasons["a"] and "cancelled or timed out" in reasons["b"]
    assert not reasons["a"].startswith("worker is")  # not a crash: no crash-loop backoff


def pending(wid: str, reason: str = "0/3 nodes have a free nvidia.com/gpu", age_s: float = 600,
            running: bool = True) -> tuple[WorkerHandle, WorkerBeat | None]:
    """A worker a cluster engine has not placed: no heartbeat, or the scaler's throttled one."""
    handle = WorkerHandle(worker_id=wid, endpoint_id="e", version=1, ref=wid, running=running,
                          started_at=NOW - int(age_s * 1000), pending=reason)
    return handle, WorkerBeat(id=wid, endpoint="e", state=WorkerState.THROTTLED, seen_at=NOW)


def test_a_worker_waiting_for_placement_is_left_alone_past_any_timeout() -> None:
    assert health(*pending("a"), NOW, T) is Health.PENDING
    assert health(*pending("a", running=False), NOW, T) is Health.DEAD
    plan = reconcile(ep(), 2, [pending("a"), pending("b", reason="no node matches gpu.product")], NOW, T)
    assert stopped(plan) == [] and started(plan) == 0  # they count toward the target
    assert plan.status is EndpointStatus.INITIALIZING
    assert plan.reason == ("2 worker(s) waiting for placement: 0/3 nodes have a free "
                           "nvidia.com/gpu; no node matches gpu.product")


def test_a_placed_worker_gets_the_ready_timeout_from_its_placement() -> None:
    handle, beat = pending("a", age_s=5)
    placed = msgspec.structs.replace(handle, pending="")  # the scaler's throttled beat is still there
    assert health(placed, beat, NOW, T) is Health.STARTING
    late = msgspec.structs.replace(placed, started_at=NOW - 120_000)
    assert health(late, beat, NOW, T) is Health.UNHEALTHY


def test_pending_beside_a_ready_worker_keeps_the_endpoint_running_and_says_why() -> None:
    plan = reconcile(ep(), 2, [w("a"), pending("b")], NOW, T)
    assert plan.status is EndpointStatus.RUNNING and started(plan) == 0
    assert plan.reason.startswith("1 worker(s) waiting for placement")
    assert reconcile(ep(), 1, [w("a")], NOW, T).reason == ""


def test_a_placed_worker_that_cannot_start_is_named_in_the_reason_and_a_dead_ones_cause_in_its_stop() -> None:
    handle, beat = pending("a", age_s=5)
    stuck = msgspec.structs.replace(handle, pending="", problem="ImagePullBackOff: pull access denied")
    plan = reconcile(ep(), 2, [(stuck, beat), pending("b")], NOW, T)
    assert stopped(plan) == [] and started(plan) == 0  # the ready timeout decides, not the problem
    assert plan.reason == ("1 worker(s) waiting for placement: 0/3 nodes have a free nvidia.com/gpu; "
                           "1 worker(s) placed but not starting: ImagePullBackOff: pull access denied")
    ended = msgspec.structs.replace(stuck, running=False, problem="OOMKilled (exit code 137)")
    [stop] = [a for a in reconcile(ep(), 1, [(ended, None)], NOW, T).actions if isinstance(a, Stop)]
    assert stop.reason == "worker is dead: OOMKilled (exit code 137)"


def test_update_with_room_starts_new_workers_beside_the_old() -> None:
    plan = reconcile(ep(version=2), 1, [w("old")], NOW, T, room=1)
    assert started(plan) == 1 and stopped(plan) == [] and plan.status is EndpointStatus.UPDATING


def test_update_without_room_replaces_in_place_idle_first() -> None:
    workers = [w("busy", "running", age_s=500), w("idle", age_s=100)]
    plan = reconcile(ep(version=2), 2, workers, NOW, T, room=0)
    assert started(plan) == 0 and stopped(plan) == ["idle"]
    assert plan.status is EndpointStatus.UPDATING and "no free GPU" in plan.reason
    [stop] = [a for a in plan.actions if isinstance(a, Stop)]
    assert stop.reason.startswith("rolled to version 2")  # counted as a rolling update


def test_update_in_place_waits_while_one_drains_or_a_new_one_starts() -> None:
    old = [w("a", age_s=500), w("b", age_s=100)]
    plan = reconcile(ep(version=2), 2, old, NOW, T, room=0, draining=1)
    assert started(plan) == 0 and stopped(plan) == []  # the first has not exited yet
    plan = reconcile(ep(version=2), 2, [w("b")], NOW, T, room=1)
    assert started(plan) == 1 and stopped(plan) == []  # its GPU is free: start, stop nothing
    new = w("n", None, version=2, age_s=1)
    plan = reconcile(ep(version=2), 2, [w("b"), new], NOW, T, room=0)
    assert started(plan) == 0 and stopped(plan) == []  # the new one is not ready yet
    plan = reconcile(ep(version=2), 2, [w("b"), w("n", version=2)], NOW, T, room=0)
    assert stopped(plan) == ["b"]  # now the next old one makes room


def test_room_does_not_limit_a_fresh_endpoint_or_a_finished_update() -> None:
    plan = reconcile(ep(), 2, [], NOW, T, room=0)
    assert started(plan) == 2  # not rolling: the start fails and says why (no free GPU)
    plan = reconcile(ep(version=2), 1, [w("old"), w("n", version=2)], NOW, T, room=0)
    assert stopped(plan) == ["old"] and plan.status is EndpointStatus.RUNNING
