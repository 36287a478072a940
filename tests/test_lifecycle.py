"""The transition table, one row per RunPod rule."""

from __future__ import annotations

import pytest
from msgspec import Raw

from serverless import lifecycle
from serverless.lifecycle import Event
from serverless.model import JobRecord, Status, WorkerBeat, WorkerState

Q, P, C, F, X, T = (Status.IN_QUEUE, Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED,
                    Status.CANCELLED, Status.TIMED_OUT)


@pytest.mark.parametrize(
    "current,event,expected",
    [
        (Q, Event.TAKE, P),  # a worker takes a queued job
        (P, Event.TAKE, None),  # a running job cannot be taken twice
        (P, Event.PROGRESS, P),  # progress keeps it running
        (P, Event.COMPLETE, C),
        (P, Event.FAIL, F),
        (P, Event.TIME_OUT, T),  # executionTimeout passed
        (Q, Event.EXPIRE, T),  # ttl passed before a worker took it
        (P, Event.EXPIRE, None),  # ttl only applies before the start
        (Q, Event.CANCEL, X),
        (P, Event.CANCEL, X),
        (C, Event.CANCEL, None),  # finished jobs stay finished
        (Q, Event.PURGE, X),
        (P, Event.PURGE, None),  # purge-queue leaves running jobs alone
        (F, Event.RETRY, Q),  # retry: FAILED ...
        (T, Event.RETRY, Q),  # ... or TIMED_OUT only
        (C, Event.RETRY, None),
        (X, Event.RETRY, None),
        (P, Event.REQUEUE, Q),  # a dead worker's job goes back to the queue
        (P, Event.GIVE_UP, F),  # ... until its attempts are spent
        (X, Event.COMPLETE, None),  # a cancelled job's late result is refused
        (None, Event.CANCEL, None),  # unknown job
    ],
)
def test_transitions(current, event, expected) -> None:
    assert lifecycle.next_status(current, event) == expected


def test_every_event_has_a_rule_and_terminal_statuses_only_leave_by_retry() -> None:
    assert set(lifecycle.TRANSITIONS) == set(Event)
    for event, (sources, _) in lifecycle.TRANSITIONS.items():
        if sources & {C, F, X, T}:
            assert event is Event.RETRY


@pytest.mark.parametrize("tries,expected", [(1, Event.REQUEUE), (2, Event.REQUEUE), (3, Event.GIVE_UP)])
def test_lease_lost_event(tries, expected) -> None:
    assert lifecycle.lease_lost_event(tries, max_attempts=3) is expected


def record(**kw) -> JobRecord:
    base = dict(id="j", endpoint="e", status=Q, input=Raw(b"{}"), submitted_at=1_000)
    return JobRecord(**{**base, **kw})


def test_expiry_only_while_queued() -> None:
    assert lifecycle.is_expired(record(ttl_ms=500), now_ms=1_500)
    assert not lifecycle.is_expired(record(ttl_ms=500), now_ms=1_499)
    assert not lifecycle.is_expired(record(ttl_ms=500, status=P), now_ms=9_999)


def test_status_body_times_and_fields() -> None:
    done = record(status=C, started_at=1_250, finished_at=1_400, output=Raw(b'"hi"'), worker_id="w1")
    body = lifecycle.body_json(lifecycle.status_body(done, now_ms=5_000))
    assert body == (b'{"id":"j","status":"COMPLETED","delayTime":250,"executionTime":150,'
                    b'"output":"hi","workerId":"w1"}')
    queued = lifecycle.body_json(lifecycle.status_body(record(), now_ms=5_000))
    assert queued == b'{"id":"j","status":"IN_QUEUE"}'


def test_worker_counts_mark_silent_workers_unhealthy() -> None:
    beats = [
        WorkerBeat(id="a", endpoint="e", state=WorkerState.IDLE, seen_at=10_000),
        WorkerBeat(id="b", endpoint="e", state=WorkerState.RUNNING, seen_at=10_000),
        WorkerBeat(id="c", endpoint="e", state=WorkerState.RUNNING, seen_at=1_000),
    ]
    counts = lifecycle.worker_counts(beats, now_ms=11_000, stale_after_ms=6_000)
    assert (counts.idle, counts.running, counts.unhealthy) == (1, 1, 1)


def test_worker_counts_judge_runpod_workers_by_their_ping_interval_and_forget_gone_ones() -> None:
    beats = [
        WorkerBeat(id="a", endpoint="e", state=WorkerState.IDLE, seen_at=80_000, interval_ms=10_000),
        WorkerBeat(id="b", endpoint="e", state=WorkerState.IDLE, seen_at=60_000, interval_ms=10_000),
        WorkerBeat(id="c", endpoint="e", state=WorkerState.IDLE, seen_at=0, interval_ms=1_000),
        WorkerBeat(id="d", endpoint="e", state=WorkerState.UNHEALTHY, seen_at=99_000, interval_ms=10_000),
    ]
    counts = lifecycle.worker_counts(beats, now_ms=100_000, stale_after_ms=6_000)
    # a: 20 s silent is 2 pings (fine); b: 40 s is 4 (unhealthy); c: 100 pings silent (gone)
    assert (counts.idle, counts.unhealthy) == (1, 2)


def test_a_throttled_worker_counts_while_the_scaler_refreshes_it_and_not_after() -> None:
    from serverless.lifecycle import worker_counts
    from serverless.model import WorkerBeat, WorkerState

    fresh = WorkerBeat(id="a", endpoint="e", state=WorkerState.THROTTLED, seen_at=100_000)
    quiet = WorkerBeat(id="b", endpoint="e", state=WorkerState.THROTTLED, seen_at=1_000)
    counts = worker_counts([fresh, quiet], now_ms=101_000, stale_after_ms=6_000)
    assert (counts.throttled, counts.unhealthy) == (1, 0)
