"""Desired vs listed workers -> Start | Stop actions (pure), the heart of the control loop.

A worker's health comes from two sources: the backend's listing (does it exist, does it run)
and its heartbeat in Redis (is it ready, idle or running, since when). Rules:
- a worker the backend reports as not running, or whose heartbeat went silent, or that never
  became ready within `ready_timeout_ms`, is stopped (and replaced if still wanted);
- a worker a cluster engine has not placed yet (the backend lists it `pending`: no node has a
  free GPU of its kind) is left alone: it counts toward the target, no timeout applies to it, and
  the endpoint's status says why it waits (a restart would only queue it again);
- healthy workers of the endpoint's current version count toward the target; missing ones are
  started (never beyond workers_max);
- workers of an older version are stopped once enough current ones are ready (rolling update:
  a stopped worker drains its in-flight jobs first, so none is dropped); until then the
  endpoint is `updating` (and `updateFailed` when the new version cannot start: see
  `reported_status`);
- when the host has no room for a new-version worker beside the old ones (`room`: no free GPU),
  the update replaces them in place, one at a time, as a Deployment with maxSurge 0 and
  maxUnavailable 1: an old worker is stopped only when nothing can start (no room), none of the
  endpoint's workers is draining and every new one started so far is ready, so at most one
  worker's worth of capacity is missing at any time;
- above the target, only workers idle for idle_timeout are stopped, longest idle first;
  when the target is 0 because the endpoint is paused or scaled to zero, all are stopped.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from scaler.backends.base import WorkerHandle
from serverless import lifecycle
from serverless.model import EndpointConfig, EndpointStatus, WorkerBeat, WorkerState


class Health(StrEnum):
    PENDING = "pending"  # not placed by the engine yet
    STARTING = "starting"
    IDLE = "idle"
    RUNNING = "running"
    DEAD = "dead"
    UNHEALTHY = "unhealthy"


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    stale_after_ms: int = 6_000  # heartbeat silence that makes a worker unhealthy
    ready_timeout_ms: int = 120_000  # time a new worker gets to send its first heartbeat
    # time a RunPod worker may go on running a job that was cancelled or timed out
    stuck_grace_ms: int = 30_000


class Start(msgspec.Struct, tag=True):
    count: int


class Stop(msgspec.Struct, tag=True):
    handle: WorkerHandle
    reason: str


Action = Start | Stop


class Plan(msgspec.Struct):
    actions: list[Action]
    status: EndpointStatus
    reason: str = ""  # why workers are not ready yet (pending placement, cannot start), or ''


def health(handle: WorkerHandle, beat: WorkerBeat | None, now: int, timing: Timing) -> Health:
    if not handle.running:
        return Health.DEAD
    if handle.pending:
        return Health.PENDING
    if beat is None or beat.state in (WorkerState.INITIALIZING, WorkerState.THROTTLED):
        # loading its model: only the ready timeout applies, not heartbeat silence
        waited = now - handle.started_at
        return Health.UNHEALTHY if waited > timing.ready_timeout_ms else Health.STARTING
    if now - beat.seen_at > lifecycle.stale_after(beat, timing.stale_after_ms):
        return Health.UNHEALTHY
    if beat.state is WorkerState.UNHEALTHY:  # it said so (a RunPod worker's failed check)
        return Health.UNHEALTHY
    if beat.state is WorkerState.RUNNING:
        return Health.RUNNING
    return Health.IDLE if beat.state is WorkerState.IDLE else Health.STARTING


def recycle_reason(beat: WorkerBeat | None, now: int, timing: Timing) -> str | None:
    """Why a live worker must be replaced although it is healthy, or None."""
    if beat is None:
        return None
    if beat.recycle:
        return "worker asked to be replaced (stopPod / refresh_worker)"
    if beat.stuck_since and now - beat.stuck_since > timing.stuck_grace_ms:
        return (f"worker still runs a job that was cancelled or timed out "
                f"{(now - beat.stuck_since) // 1000} s ago (its SDK cannot stop it)")
    return None


def reconcile(
    endpoint: EndpointConfig,
    desired: int,
    workers: list[tuple[WorkerHandle, WorkerBeat | None]],
    now: int,
    timing: Timing,
    force_zero: bool = False,
    room: int | None = None,
    draining: int = 0,
) -> Plan:
    """The actions that move `workers` toward `desired`, and the endpoint's status.

    Args:
        room: how many more workers of the endpoint the host can place now (free GPUs), or
            None when that is not bounded here (CPU workers, a cluster engine that places them).
        draining: the endpoint's workers still stopping (not in `workers`).
    """
    states = [(h, b, health(h, b, now, timing)) for h, b in workers]
    actions: list[Action] = [
        Stop(h, f"worker is {s.value}" + (f": {h.problem}" if h.problem else ""))
        for h, _, s in states if s in (Health.DEAD, Health.UNHEALTHY)
    ]
    alive = [(h, b, s) for h, b, s in states if s not in (Health.DEAD, Health.UNHEALTHY)]
    recycled = [(h, why) for h, b, _ in alive if (why := recycle_reason(b, now, timing))]
    actions += [Stop(h, why) for h, why in recycled]
    gone = {h.worker_id for h, _ in recycled}
    alive = [x for x in alive if x[0].worker_id not in gone]
    current = [x for x in alive if x[0].version == endpoint.version]
    old = [x for x in alive if x[0].version != endpoint.version]
    if force_zero:
        actions += [Stop(h, "endpoint paused or scaled to zero") for h, _, _ in alive]
        return Plan(actions, _status(endpoint, [], 0))
    waiting = "; ".join(filter(None, [
        pending_reason([h for h, _, s in current if s is Health.PENDING]),
        problem_reason([h for h, _, s in current if s is Health.STARTING and h.problem])]))
    missing = max(0, min(desired, endpoint.workers_max) - len(current))
    ready = [x for x in current if x[2] in (Health.IDLE, Health.RUNNING)]
    rolling = bool(old) and len(ready) < desired  # old workers serve until new ones are ready
    if rolling and room is not None and missing > room:
        # no place beside the old workers: replace them in place, one at a time
        missing = room
        waiting = "; ".join(filter(None, [waiting, (
            f"no free GPU to start version {endpoint.version} beside the old workers: "
            "replacing them one at a time")]))
        if room == 0 and not draining and len(ready) == len(current):
            victim = min(old, key=_replace_first)[0]
            actions.append(Stop(victim, f"rolled to version {endpoint.version} in place (no free GPU beside it)"))
    if missing:
        actions.append(Start(missing))
    if old and not rolling:
        actions += [Stop(h, f"rolled to version {endpoint.version}") for h, _, _ in old]
    actions += _idle_stops(endpoint, current, desired, now)
    return Plan(actions, _status(endpoint, alive, desired, rolling), waiting)


def _replace_first(worker: tuple[WorkerHandle, WorkerBeat | None, Health]) -> tuple[int, int]:
    """Which old worker makes room first: an idle one before a busy one, then the oldest."""
    handle, _, state = worker
    return (0 if state is not Health.RUNNING else 1, handle.started_at)


def pending_reason(pending: list[WorkerHandle]) -> str:
    """What the endpoint's status says about workers the engine has not placed: how many, and
    each distinct reason the engine gave."""
    if not pending:
        return ""
    reasons = sorted({h.pending for h in pending})
    return f"{len(pending)} worker(s) waiting for placement: " + "; ".join(reasons)


def problem_reason(stuck: list[WorkerHandle]) -> str:
    """What the endpoint's status says about placed workers whose container cannot start (the
    ready timeout replaces them if it never does)."""
    if not stuck:
        return ""
    reasons = sorted({h.problem for h in stuck})
    return f"{len(stuck)} worker(s) placed but not starting: " + "; ".join(reasons)


def _idle_stops(endpoint: EndpointConfig, current: list, desired: int, now: int) -> list[Action]:
    surplus = len(current) - desired
    if surplus <= 0:
        return []
    limit = endpoint.idle_timeout * 1000
    idle = [(b.idle_since, h) for h, b, s in current
            if s is Health.IDLE and b is not None and b.idle_since and now - b.idle_since >= limit]
    idle.sort(key=lambda x: x[0])
    return [Stop(h, f"idle for {endpoint.idle_timeout} s above the target") for _, h in idle[:surplus]]


def reported_status(planned: EndpointStatus, problem: str) -> EndpointStatus:
    """The status the scaler writes: the plan's, unless starting workers failed (`problem`).

    A failure to start is `failed`, except while some worker is ready (`running`: it still
    serves, the reason says what could not start) and during a rolling update
    (`updateFailed`: the old version's workers still serve), as Hugging Face names them.
    """
    if not problem or planned is EndpointStatus.RUNNING:
        return planned
    if planned is EndpointStatus.UPDATING:
        return EndpointStatus.UPDATE_FAILED
    return EndpointStatus.FAILED


def _status(endpoint: EndpointConfig, alive: list, desired: int, rolling: bool = False) -> EndpointStatus:
    if endpoint.paused:
        return EndpointStatus.PAUSED
    if rolling:  # workers of an older version serve while the new version starts
        return EndpointStatus.UPDATING
    if any(s in (Health.IDLE, Health.RUNNING) for _, _, s in alive):
        return EndpointStatus.RUNNING
    if alive or desired > 0:
        return EndpointStatus.INITIALIZING
    return EndpointStatus.SCALED_TO_ZERO
