"""Cluster metrics in Redis: the Lua functions that take and finish jobs fill the delay and
execution histograms and the job counters in the same call; the scaler's tally lands in one
pipeline; read_cluster turns all of it (and queue depth, age, workers) into figures."""

from __future__ import annotations

import msgspec
import pytest

from scaler.backends.base import WorkerHandle
from scaler.reconcile import Stop, Timing, reconcile
from serverless.keys import HIST_DELAY, HIST_EXEC
from serverless.metrics_store import (
    DELAY_MS, EXEC_MS, EndpointFigures, ScalerTally, bucket, histogram, read_cluster, stop_action,
)
from serverless.model import EndpointConfig, Policy, RunRequest, Status, WorkerBeat, WorkerState
from serverless.store import JobStore, now_ms
from tests.conftest import register

T0 = 1_700_000_000_000  # submission time of the scripted jobs (ms)


def req(low: bool = False) -> RunRequest:
    return RunRequest(input=msgspec.Raw(b"{}"), policy=Policy(lowPriority=True) if low else None)


async def raw(store: JobStore, template: str, endpoint: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await store.redis.hgetall(template.format(endpoint))).items()}


async def figures_of(store: JobStore, endpoint: str, now: int) -> EndpointFigures:
    everything = await read_cluster(store.redis, now, store.stale_after_ms)
    found = [f for f in everything if f.endpoint == endpoint]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("waited_ms,le", [
    (0, "0.001"), (1, "0.001"), (2, "0.0025"), (3, "0.005"), (1_000, "1.0"), (1_001, "2.5"),
    (3_600_000, "3600.0"), (3_600_001, "+Inf"),
])
async def test_a_take_counts_the_wait_since_submission_in_its_bucket(
    store: JobStore, endpoint: str, waited_ms: int, le: str
) -> None:
    await store.submit(endpoint, req(), now=T0)
    assert await store.take(endpoint, "w", now=T0 + waited_ms) is not None
    assert await raw(store, HIST_DELAY, endpoint) == {le: 1, "sum_ms": waited_ms}
    assert bucket(DELAY_MS, waited_ms) == le  # the Lua side and the Python side agree


async def test_a_take_of_many_jobs_writes_them_all(store: JobStore, endpoint: str) -> None:
    for i in range(5):
        await store.submit(endpoint, req(), now=T0 + 5 * i)
    assert len(await store.take_many(endpoint, "w", 10, now=T0 + 30)) == 5  # waits 30..10 ms
    assert await raw(store, HIST_DELAY, endpoint) == {"0.05": 1, "0.025": 3, "0.01": 1, "sum_ms": 100}


async def test_a_running_job_that_ends_counts_its_execution_time_by_status(
    store: JobStore, endpoint: str
) -> None:
    ends = [(Status.COMPLETED, 40), (Status.FAILED, 700), (Status.TIMED_OUT, 20)]
    for _ in range(len(ends) + 1):
        await store.submit(endpoint, req(), now=T0)
    taken = await store.take_many(endpoint, "w", 4, now=T0 + 1)
    for job, (status, ran_ms) in zip(taken, ends):
        assert (await store.finish(job.id, job.attempt, status, now=T0 + 1 + ran_ms)).outcome == "ok"
    await store.cancel(taken[3].id, now=T0 + 6)  # cancelled while running: 5 ms
    queued = await store.submit(endpoint, req(), now=T0)
    await store.cancel(queued.id, now=T0 + 9)  # never ran: counted finished, not in the histogram
    assert await raw(store, HIST_EXEC, endpoint) == {
        "completed:0.05": 1, "completed:sum_ms": 40, "failed:1.0": 1, "failed:sum_ms": 700,
        "timed_out:0.025": 1, "timed_out:sum_ms": 20, "cancelled:0.01": 1, "cancelled:sum_ms": 5,
    }
    figures = await figures_of(store, endpoint, T0 + 10)
    assert {s: h.count for s, h in figures.execution.items()} == {
        "cancelled": 1, "completed": 1, "failed": 1, "timed_out": 1}
    assert figures.stats == {"submitted": 5, "completed": 1, "failed": 1, "timed_out": 1, "cancelled": 2}


async def test_a_lost_lease_is_not_a_second_wait_but_a_retry_is(store: JobStore, endpoint: str) -> None:
    t0 = now_ms()  # recent: /retry reads the job back, and an old one would be past its ttl
    job = await store.submit(endpoint, req(), now=t0)
    await store.take(endpoint, "w1", now=t0 + 10)
    lost = t0 + 10 + store.settings.lease_ms + 1
    assert await store.reap(endpoint, now=lost) == (1, 0)  # back to the queue, tries 1
    again = await store.take(endpoint, "w2", now=lost + 5)
    ended = await store.finish(job.id, again.attempt, Status.FAILED, error="x", now=lost + 6)
    assert ended.outcome == "ok"
    assert (await raw(store, HIST_DELAY, endpoint)) == {"0.01": 1, "sum_ms": 10}
    await store.retry(job.id, now=lost + 100)  # submitted again: its wait counts from here
    await store.take(endpoint, "w3", now=lost + 103)
    assert await raw(store, HIST_DELAY, endpoint) == {"0.01": 1, "0.005": 1, "sum_ms": 13}
    stats = (await figures_of(store, endpoint, lost + 104)).stats
    assert stats == {"submitted": 2, "retried": 1, "failed": 1}


async def test_queue_depth_age_and_in_progress_by_priority(store: JobStore, endpoint: str) -> None:
    await store.submit(endpoint, req(), now=T0)
    await store.submit(endpoint, req(), now=T0 + 1_000)
    await store.submit(endpoint, req(), now=T0 + 2_000)
    await store.submit(endpoint, req(low=True), now=T0 + 500)
    await store.take(endpoint, "w", now=T0 + 3_000)  # the oldest normal job
    f = await figures_of(store, endpoint, T0 + 10_000)
    assert (f.depth, f.oldest_age_s, f.in_progress) == (
        {"normal": 2, "low": 1}, {"normal": 9.0, "low": 9.5}, 1)
    # every job submitted is queued, running or finished
    finished = sum(f.stats.get(s, 0) for s in ("completed", "failed", "cancelled", "timed_out"))
    assert f.stats["submitted"] - finished == sum(f.depth.values()) + f.in_progress


async def test_a_registered_endpoint_nobody_used_reports_zeros(store: JobStore, endpoint: str) -> None:
    await register(store, endpoint)
    f = await figures_of(store, endpoint, now_ms())
    assert (f.depth, f.oldest_age_s, f.in_progress, f.stats) == (
        {"normal": 0, "low": 0}, {"normal": 0.0, "low": 0.0}, 0, {})
    assert (f.delay.count, f.delay.sum_s, f.execution, f.cold_starts, f.desired) == (0, 0.0, {}, {}, None)


async def test_workers_by_state_count_both_protocols_and_judge_silence(
    store: JobStore, endpoint: str
) -> None:
    await register(store, endpoint)  # listed: registered (or once it got a job)
    now = now_ms()
    beats = [("a", WorkerState.IDLE, now, 0), ("b", WorkerState.RUNNING, now, 0),
             ("c", WorkerState.IDLE, now - 60_000, 0),  # silent: unhealthy
             ("d", WorkerState.INITIALIZING, now - 60_000, 0),  # loading its model: no beats yet
             ("rp", WorkerState.IDLE, now, 10_000)]  # a RunPod-protocol worker's ping
    for wid, state, seen, interval in beats:
        await store.beat(WorkerBeat(id=wid, endpoint=endpoint, state=state, seen_at=seen,
                                    interval_ms=interval))
    workers = (await figures_of(store, endpoint, now)).workers
    assert msgspec.structs.asdict(workers) == {
        "idle": 2, "running": 1, "initializing": 1, "unhealthy": 1, "throttled": 0}


async def test_the_scaler_tally_is_written_in_one_flush_and_read_back(
    store: JobStore, endpoint: str
) -> None:
    await register(store, endpoint)
    tally = ScalerTally()
    tally.cold_start(endpoint, "docker", "ready", 4_200)
    tally.cold_start(endpoint, "docker", "ready", 700)
    tally.cold_start(endpoint, "docker", "failed", None)
    tally.cold_start(endpoint, "process", "timeout", None)
    tally.decision(endpoint, "scale_up")
    tally.decision(endpoint, "scale_up")
    tally.decision(endpoint, "scale_down")
    tally.desired(endpoint, 3)
    tally.desired(endpoint, 2)  # the last of the tick wins
    await tally.flush(store.redis)
    await tally.flush(store.redis)  # nothing new: nothing counted twice
    f = await figures_of(store, endpoint, now_ms())
    assert f.cold_starts == {("docker", "ready"): 2, ("docker", "failed"): 1, ("process", "timeout"): 1}
    assert list(f.cold_start) == ["docker"]
    docker = f.cold_start["docker"]
    buckets = dict(docker.buckets)
    assert (docker.count, docker.sum_s, buckets["1.0"], buckets["5.0"]) == (2, 4.9, 1, 2)
    assert (f.decisions, f.desired) == ({"scale_up": 2, "scale_down": 1}, 2)


def test_histogram_hash_becomes_cumulative_buckets() -> None:
    h = histogram({"0.01": 2, "1.0": 1, "+Inf": 1, "sum_ms": 4_000_000}, EXEC_MS)
    assert h.buckets[:7] == [("0.01", 2), ("0.025", 2), ("0.05", 2), ("0.1", 2), ("0.25", 2),
                             ("0.5", 2), ("1.0", 3)]
    assert h.buckets[-2:] == [("3600.0", 3), ("+Inf", 4)]
    assert (h.count, h.sum_s) == (4, 4000.0)
    empty = histogram({}, EXEC_MS)
    assert len(empty.buckets) == len(EXEC_MS) + 1 and {n for _, n in empty.buckets} == {0}


# ---- scaler decisions: each stop reason reconcile gives maps to an action ----------------

NOW = 1_000_000
TIMING = Timing(stale_after_ms=6_000, ready_timeout_ms=60_000, stuck_grace_ms=30_000)


def _w(wid: str, state: str | None = "idle", version: int = 1, idle_for_s: float = 0,
       running: bool = True, silent_s: float = 0,
       recycle: bool = False) -> tuple[WorkerHandle, WorkerBeat | None]:
    handle = WorkerHandle(worker_id=wid, endpoint_id="e", version=version, ref=wid, running=running,
                          started_at=NOW - 100_000)
    if state is None:
        return handle, None
    beat = WorkerBeat(id=wid, endpoint="e", state=WorkerState(state), seen_at=NOW - int(silent_s * 1000),
                      idle_since=NOW - int(idle_for_s * 1000) if state == "idle" else 0, recycle=recycle)
    return handle, beat


def _ep(**kw: object) -> EndpointConfig:
    return EndpointConfig(**{"id": "e", "name": "e", "template_id": "t", "idle_timeout": 5, **kw})


@pytest.mark.parametrize("endpoint,desired,workers,force_zero,action", [
    (_ep(), 1, [_w("a", running=False)], False, "replace_unhealthy"),  # the backend says it died
    (_ep(), 1, [_w("a", silent_s=60)], False, "replace_unhealthy"),  # its heartbeat stopped
    (_ep(), 1, [_w("a", None)], False, "replace_unhealthy"),  # never ready within the timeout
    (_ep(), 1, [_w("a", recycle=True)], False, "recycle"),  # stopPod / refresh_worker
    (_ep(version=2), 1, [_w("a", version=1), _w("b", version=2)], False, "rolling_update"),
    (_ep(), 0, [_w("a", idle_for_s=60)], False, "scale_down"),  # idle past idle_timeout
    (_ep(paused=True), 0, [_w("a")], True, "scale_to_zero"),
])
def test_every_stop_reason_of_reconcile_maps_to_its_decision(
    endpoint: EndpointConfig, desired: int, workers: list, force_zero: bool, action: str
) -> None:
    plan = reconcile(endpoint, desired, workers, NOW, TIMING, force_zero=force_zero)
    reasons = [a.reason for a in plan.actions if isinstance(a, Stop)]
    assert reasons and {stop_action(r) for r in reasons} == {action}


def test_an_unknown_stop_reason_is_other() -> None:
    assert stop_action("because") == "other"
