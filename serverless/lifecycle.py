"""Job state transitions: the only place a job's status is decided.

    IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED | TIMED_OUT

`TRANSITIONS` maps each event to the statuses it may start from and the status it leads to.
The store applies a transition atomically in Redis (one Lua script), passing these sets to the
script, so the scripts never decide on their own which moves are legal. Everything here is pure:
the clock is an argument.
"""

from __future__ import annotations

import functools
from enum import StrEnum

import msgspec

from serverless.model import (
    TERMINAL_STATUSES, JobRecord, Status, StatusBody, WorkerBeat, WorkerCounts, WorkerState,
)

Q, P = Status.IN_QUEUE, Status.IN_PROGRESS


class Event(StrEnum):
    TAKE = "take"  # a worker takes the job from the queue
    PROGRESS = "progress"  # progress_update while running
    COMPLETE = "complete"  # handler returned
    FAIL = "fail"  # handler returned {"error"} or raised
    TIME_OUT = "time_out"  # ran past executionTimeout
    EXPIRE = "expire"  # ttl passed before any worker took it
    CANCEL = "cancel"  # client cancelled it
    PURGE = "purge"  # purge-queue removed it
    RETRY = "retry"  # client asked /retry
    REQUEUE = "requeue"  # worker lost its lease (crash) or released it on drain
    GIVE_UP = "give_up"  # worker lost its lease and no attempts are left


TRANSITIONS: dict[Event, tuple[frozenset[Status], Status]] = {
    Event.TAKE: (frozenset({Q}), P),
    Event.PROGRESS: (frozenset({P}), P),
    Event.COMPLETE: (frozenset({P}), Status.COMPLETED),
    Event.FAIL: (frozenset({P}), Status.FAILED),
    Event.TIME_OUT: (frozenset({P}), Status.TIMED_OUT),
    Event.EXPIRE: (frozenset({Q}), Status.TIMED_OUT),
    Event.CANCEL: (frozenset({Q, P}), Status.CANCELLED),
    Event.PURGE: (frozenset({Q}), Status.CANCELLED),
    Event.RETRY: (frozenset({Status.FAILED, Status.TIMED_OUT}), Q),
    Event.REQUEUE: (frozenset({P}), Q),
    Event.GIVE_UP: (frozenset({P}), Status.FAILED),
}

# Events whose writes only the worker holding the current attempt may make (fenced writes).
FENCED_EVENTS = frozenset({Event.PROGRESS, Event.COMPLETE, Event.FAIL, Event.TIME_OUT, Event.REQUEUE})


def next_status(current: Status | None, event: Event) -> Status | None:
    """The status `event` leads to from `current`, or None when the move is refused."""
    sources, target = TRANSITIONS[event]
    return target if current in sources else None


@functools.cache  # one string per event: built once, not on every write
def sources_arg(event: Event) -> str:
    """The allowed source statuses as the space-separated list the Lua scripts take."""
    return " ".join(sorted(TRANSITIONS[event][0]))


def lease_lost_event(tries: int, max_attempts: int) -> Event:
    """A job whose worker vanished goes back to the queue until its attempts are spent."""
    return Event.REQUEUE if tries < max_attempts else Event.GIVE_UP


LEASE_LOST_ERROR = (
    "worker lost during attempt %d (no heartbeat within its lease) and no attempts are left; "
    "check the worker's logs for a crash or an OOM kill"
)


def lease_lost_error(tries: int) -> str:
    return LEASE_LOST_ERROR % tries


def is_expired(record: JobRecord, now_ms: int) -> bool:
    """A queued job whose ttl has passed ends TIMED_OUT instead of starting."""
    return (
        record.status is Q
        and record.ttl_ms is not None
        and now_ms >= record.submitted_at + record.ttl_ms
    )


def delay_time(record: JobRecord, now_ms: int) -> int:
    """ms from submission to start (to now while still queued)."""
    end = record.started_at if record.started_at is not None else now_ms
    return max(0, end - record.submitted_at)


def execution_time(record: JobRecord, now_ms: int) -> int:
    """ms of execution so far (0 before start)."""
    if record.started_at is None:
        return 0
    end = record.finished_at if record.finished_at is not None else now_ms
    return max(0, end - record.started_at)


def status_body(record: JobRecord, now_ms: int) -> StatusBody:
    """Shape a record as RunPod's /status answer: output while running shows progress."""
    body = StatusBody(id=record.id, status=record.status.value)
    if record.started_at is not None or record.status is not Q:
        body.delayTime = delay_time(record, now_ms)
        body.executionTime = execution_time(record, now_ms)
    if record.output is not None:
        body.output = record.output
    if record.error is not None:
        body.error = record.error
    if record.worker_id is not None:
        body.workerId = record.worker_id
    return body


def ended_as_announced(record: JobRecord, announced: str) -> JobRecord | None:
    """`record` (as submitted) after the end its done message told (serverless/notify.py:
    `status \\n started_at \\n finished_at \\n worker_id \\n` then `o` + output, `e` + error
    or `-`); None when the text is not such an end, and the job must be read instead."""
    parts = announced.split("\n", 4)
    if len(parts) != 5 or not parts[4] or parts[4][0] not in "oe-":
        return None
    status, started, finished, worker, result = parts
    try:
        ended = Status(status)
        started_at, finished_at = (int(started) if started else None), int(finished)
    except ValueError:
        return None
    if ended not in TERMINAL_STATUSES:
        return None
    kind, body = result[0], result[1:]
    return msgspec.structs.replace(
        record, status=ended, started_at=started_at, finished_at=finished_at,
        worker_id=worker or None, output=msgspec.Raw(body.encode()) if kind == "o" else None,
        error=body if kind == "e" else None,
    )


def body_json(body: StatusBody) -> bytes:
    return msgspec.json.encode(body)


# A worker silent for this many of its heartbeat periods is unhealthy ...
STALE_BEATS = 3
# ... and one silent for this many is gone: not counted at all (a RunPod-protocol worker cannot
# remove its own entry when it exits; the scaler, or this rule, forgets it)
GONE_BEATS = 30


def stale_after(beat: WorkerBeat, default_ms: int) -> int:
    """How long `beat`'s worker may stay silent before it counts as unhealthy: three of its own
    heartbeat periods (RunPod workers ping less often than podq's runtime beats)."""
    return STALE_BEATS * beat.interval_ms if beat.interval_ms else default_ms


def is_gone(beat: WorkerBeat, now_ms: int, default_ms: int) -> bool:
    """A RunPod-protocol worker silent for GONE_BEATS periods has exited."""
    return bool(beat.interval_ms) and now_ms - beat.seen_at > GONE_BEATS * beat.interval_ms


def worker_counts(beats: list[WorkerBeat], now_ms: int, stale_after_ms: int) -> WorkerCounts:
    """Count workers by state; one silent for `stale_after_ms` (or three of its own heartbeat
    periods) counts as unhealthy, and so does one that said it is."""
    counts = WorkerCounts()
    for beat in beats:
        if is_gone(beat, now_ms, stale_after_ms):
            continue
        quiet = now_ms - beat.seen_at > stale_after(beat, stale_after_ms)
        if quiet and beat.state is WorkerState.THROTTLED:  # the scaler no longer says so
            continue
        silent = quiet and beat.state is not WorkerState.INITIALIZING
        state = WorkerState.UNHEALTHY if silent else beat.state
        setattr(counts, state.value, getattr(counts, state.value) + 1)
    return counts
