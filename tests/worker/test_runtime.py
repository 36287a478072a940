"""The worker runtime end to end against a real redis-server (in-process Worker)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time
from typing import Any

import msgspec
import pytest

from serverless.model import Policy, RunRequest, Status
from serverless.store import JobStore
from worker import progress_update


def req(payload: Any = None, **kw: Any) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode(payload if payload is not None else {})), **kw)


def out(record: Any) -> Any:
    return msgspec.json.decode(record.output) if record.output is not None else None


async def submit_and_wait(store: JobStore, endpoint: str, payload: Any = None, timeout: float = 10, **kw: Any):
    rec = await store.submit(endpoint, req(payload, **kw))
    return await store.wait(rec.id, timeout)


# ---- handler kinds ----------------------------------------------------------------------

def sync_handler(job):
    return {"kind": "def", "thread": threading.current_thread().name, "x": job["input"]["x"]}


async def async_handler(job):
    await asyncio.sleep(0)
    return {"kind": "async", "x": job["input"]["x"]}


def gen_handler(job):
    for i in range(job["input"]["x"]):
        yield i


async def agen_handler(job):
    for i in range(job["input"]["x"]):
        yield {"i": i}


class CallableGen:
    def __call__(self, job):
        yield "from a callable object"


@pytest.mark.parametrize(
    "handler,aggregate,expected",
    [
        (async_handler, False, {"kind": "async", "x": 3}),
        (gen_handler, True, [0, 1, 2]),
        (gen_handler, False, []),
        (agen_handler, True, [{"i": 0}, {"i": 1}, {"i": 2}]),
        (CallableGen(), True, ["from a callable object"]),
    ],
)
async def test_handler_kinds(store, endpoint, worker_factory, handler, aggregate, expected) -> None:
    async with worker_factory(handler, return_aggregate_stream=aggregate):
        done = await submit_and_wait(store, endpoint, {"x": 3})
    assert done.status is Status.COMPLETED, done.error
    assert out(done) == expected


async def test_each_job_closes_its_handler_run_itself(store, endpoint, worker_factory) -> None:
    """No job leaves its async generator to the loop's finalizer hook (which costs a
    thread-safe wake-up and a task per job)."""
    finalized: list[str] = []
    hooks = sys.get_asyncgen_hooks()

    def finalizer(agen: Any) -> None:
        finalized.append(agen.__qualname__)
        hooks.finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=finalizer)
    try:  # a streaming handler: a coroutine handler is awaited without `run`
        async with worker_factory(agen_handler):
            for x in range(3):
                done = await submit_and_wait(store, endpoint, {"x": x})
                assert done.status is Status.COMPLETED, done.error
            gc.collect()
    finally:
        sys.set_asyncgen_hooks(*hooks)
    assert "run" not in finalized


async def test_sync_handler_runs_off_the_event_loop(store, endpoint, worker_factory) -> None:
    async with worker_factory(sync_handler):
        done = await submit_and_wait(store, endpoint, {"x": 1})
    assert out(done)["thread"].startswith("podq-handler")


async def test_stream_chunks_arrive_in_order_while_running(store, endpoint, worker_factory) -> None:
    gate = asyncio.Event()

    async def handler(job):
        for i in range(50):
            yield i
        await gate.wait()
        yield "last"

    async with worker_factory(handler):
        rec = await store.submit(endpoint, req({}))
        seen: list[Any] = []
        cursor = "0-0"
        while len(seen) < 50:
            for c in await store.read_chunks(rec.id, cursor, block_ms=2000):
                seen.append(msgspec.json.decode(c.output))
                cursor = c.cursor
        assert seen == list(range(50))
        assert (await store.get(rec.id)).status is Status.IN_PROGRESS
        gate.set()
        done = await store.wait(rec.id, 5)
    assert done.status is Status.COMPLETED
    assert [msgspec.json.decode(c.output) for c in await store.read_chunks(rec.id, cursor)] == ["last"]


async def test_progress_visible_then_final_result_wins(store, endpoint, worker_factory) -> None:
    gate = threading.Event()

    def handler(job):
        progress_update(job, {"pct": 50})
        gate.wait(5)
        for pct in range(51, 100):
            progress_update(job, {"pct": pct})
        return "final"

    async with worker_factory(handler):
        rec = await store.submit(endpoint, req({}))
        for _ in range(100):
            got = await store.get(rec.id)
            if got.output is not None:
                break
            await asyncio.sleep(0.02)
        assert got.status is Status.IN_PROGRESS and out(got) == {"pct": 50}
        gate.set()
        done = await store.wait(rec.id, 5)
    assert done.status is Status.COMPLETED and out(done) == "final"


# ---- result and error shapes ------------------------------------------------------------

@pytest.mark.parametrize(
    "returned,status,output,error",
    [
        ({"error": "bad seed"}, Status.FAILED, None, "bad seed"),
        ({"error": "x", "detail": 1}, Status.FAILED, {"detail": 1}, "x"),
        ({"error": {"code": 7}}, Status.FAILED, None, '{"code":7}'),
        ({"a": 1, "refresh_worker": False}, Status.COMPLETED, {"a": 1}, None),
        ([1, "two"], Status.COMPLETED, [1, "two"], None),
        (None, Status.COMPLETED, None, None),
    ],
)
async def test_return_shapes(store, endpoint, worker_factory, returned, status, output, error) -> None:
    async with worker_factory(lambda job: returned):
        done = await submit_and_wait(store, endpoint)
    assert (done.status, out(done), done.error) == (status, output, error)


async def test_exception_becomes_failed_with_type_message_traceback(store, endpoint, worker_factory) -> None:
    def handler(job):
        raise ValueError("no such model")

    async with worker_factory(handler):
        done = await submit_and_wait(store, endpoint)
    assert done.status is Status.FAILED
    err = json.loads(done.error)
    assert err["error_type"] == "<class 'ValueError'>"
    assert err["error_message"] == "no such model"
    assert "raise ValueError" in err["error_traceback"]
    assert err["worker_id"] == "w-inproc"


@pytest.mark.parametrize("handler", [async_handler, sync_handler, agen_handler],
                         ids=["coroutine", "function", "async generator"])
async def test_an_input_that_does_not_decode_fails_the_job_at_once(store, endpoint, worker_factory,
                                                                    handler) -> None:
    """A job written to Redis by something other than podq, with an input that is not JSON,
    fails with the decode error; it does not escape the job's task (which left the job to
    its lease and retries)."""
    async with worker_factory(handler):
        rec = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b'{"x": ')))
        done = await store.wait(rec.id, 10)
    assert done.status is Status.FAILED and done.attempt == 1
    assert json.loads(done.error)["error_type"] == "<class 'msgspec.DecodeError'>"


async def test_generator_exception_fails_job_after_streamed_chunks(store, endpoint, worker_factory) -> None:
    async def handler(job):
        yield 1
        raise RuntimeError("mid-stream")

    async with worker_factory(handler):
        done = await submit_and_wait(store, endpoint)
    assert done.status is Status.FAILED
    assert json.loads(done.error)["error_message"] == "mid-stream"
    assert [msgspec.json.decode(c.output) for c in await store.read_chunks(done.id)] == [1]


async def test_yielded_error_fails_and_is_not_streamed(store, endpoint, worker_factory) -> None:
    def handler(job):
        yield "ok"
        yield {"error": "out of memory"}
        yield "never"

    async with worker_factory(handler):
        done = await submit_and_wait(store, endpoint)
    assert (done.status, done.error) == (Status.FAILED, "out of memory")
    assert [msgspec.json.decode(c.output) for c in await store.read_chunks(done.id)] == ["ok"]


async def test_unserializable_output_fails_clearly(store, endpoint, worker_factory) -> None:
    async with worker_factory(lambda job: {"obj": object()}):
        done = await submit_and_wait(store, endpoint)
    assert done.status is Status.FAILED and "not JSON serializable" in done.error


async def test_oversize_chunk_fails_job(store, endpoint, worker_factory) -> None:
    async def handler(job):
        yield "x" * (2 << 20)

    async with worker_factory(handler):
        done = await submit_and_wait(store, endpoint)
    assert done.status is Status.FAILED and "over the 1048576-byte limit" in done.error


# ---- timeouts and cancel ----------------------------------------------------------------

async def test_execution_timeout_ends_timed_out_and_stops_handler(store, endpoint, worker_factory) -> None:
    stopped = asyncio.Event()

    async def handler(job):
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    async with worker_factory(handler) as worker:
        done = await submit_and_wait(store, endpoint, policy=Policy(executionTimeout=200))
        assert done.status is Status.TIMED_OUT and "executionTimeout of 200 ms" in done.error
        assert stopped.is_set()
        await asyncio.sleep(0.05)
        assert not worker.active  # the slot is free again


async def test_cancel_running_async_job_cancels_the_task(store, endpoint, worker_factory) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(job):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with worker_factory(handler) as worker:
        rec = await store.submit(endpoint, req({}))
        await asyncio.wait_for(started.wait(), 5)
        assert (await store.cancel(rec.id)).status is Status.CANCELLED
        await asyncio.wait_for(cancelled.wait(), 2)
        for _ in range(50):
            if not worker.active:
                break
            await asyncio.sleep(0.02)
        assert not worker.active
    assert (await store.get(rec.id)).status is Status.CANCELLED


async def test_cancel_running_sync_job_discards_result(store, endpoint, worker_factory) -> None:
    release = threading.Event()
    running = threading.Event()

    def handler(job):
        running.set()
        release.wait(5)
        return "too late"

    async with worker_factory(handler):
        rec = await store.submit(endpoint, req({}))
        await asyncio.get_running_loop().run_in_executor(None, running.wait, 5)
        await store.cancel(rec.id)
        release.set()
        await asyncio.sleep(0.2)
    final = await store.get(rec.id)
    assert final.status is Status.CANCELLED and final.output is None


async def test_cancel_queued_job_never_runs(store, endpoint, worker_factory) -> None:
    ran: list[str] = []
    rec = await store.submit(endpoint, req({}))
    await store.cancel(rec.id)
    async with worker_factory(lambda job: ran.append(job["id"])):
        done = await submit_and_wait(store, endpoint)
    assert done.status is Status.COMPLETED and ran == [done.id]


async def test_retry_runs_failed_job_again_with_same_input(store, endpoint, worker_factory) -> None:
    attempts: list[Any] = []

    def handler(job):
        attempts.append(job["input"])
        if len(attempts) == 1:
            raise RuntimeError("transient")
        return "ok"

    async with worker_factory(handler):
        first = await submit_and_wait(store, endpoint, {"v": 1})
        assert first.status is Status.FAILED
        await store.retry(first.id)
        second = await store.wait(first.id, 5)
    assert second.status is Status.COMPLETED and attempts == [{"v": 1}, {"v": 1}]


async def test_purge_while_workers_take_loses_nothing(store, endpoint, worker_factory) -> None:
    async def handler(job):
        await asyncio.sleep(0.01)
        return job["id"]

    ids = [(await store.submit(endpoint, req({}))).id for _ in range(300)]
    async with worker_factory(handler, concurrency_modifier=lambda c: 8):
        await asyncio.sleep(0.05)
        removed = await store.purge(endpoint)
        records = [await store.wait(i, 10) for i in ids]
    statuses = [r.status for r in records]
    assert statuses.count(Status.CANCELLED) == removed
    assert statuses.count(Status.COMPLETED) == 300 - removed
    assert all(out(r) == r.id for r in records if r.status is Status.COMPLETED)


# ---- concurrency ------------------------------------------------------------------------

async def test_200_jobs_150_running_new_job_picked_up_at_once(store, endpoint, worker_factory) -> None:
    release = asyncio.Event()

    async def handler(job):
        if job["input"].get("quick"):
            return "quick"
        await release.wait()
        return "slow"

    async with worker_factory(handler, concurrency_modifier=lambda c: 200) as worker:
        slow = [(await store.submit(endpoint, req({}))).id for _ in range(150)]
        for _ in range(200):
            if len(worker.active) == 150:
                break
            await asyncio.sleep(0.02)
        assert len(worker.active) == 150
        t0 = time.perf_counter()
        quick = await submit_and_wait(store, endpoint, {"quick": True}, timeout=5)
        latency = time.perf_counter() - t0
        release.set()
        finished = [await store.wait(i, 10) for i in slow]
    assert quick.status is Status.COMPLETED and out(quick) == "quick"
    assert latency < 1.0, f"new job waited {latency:.3f}s behind running ones"
    assert all(r.status is Status.COMPLETED for r in finished)


async def test_concurrency_modifier_none_keeps_current(store, endpoint, worker_factory) -> None:
    async with worker_factory(lambda job: 1, concurrency_modifier=lambda c: None) as worker:
        done = await submit_and_wait(store, endpoint)
        assert done.status is Status.COMPLETED and worker.concurrency == 1


# ---- heartbeat and registry -------------------------------------------------------------

async def test_heartbeat_registers_worker_state_and_no_gpus(store, endpoint, worker_factory) -> None:
    gate = asyncio.Event()

    async def handler(job):
        await gate.wait()

    async with worker_factory(handler) as worker:
        rec = await store.submit(endpoint, req({}))
        await asyncio.sleep(store.settings.heartbeat_ms / 1000 * 2)
        beats = await store.workers(endpoint)
        assert [(b.id, b.state.value, b.jobs) for b in beats] == [("w-inproc", "running", [rec.id])]
        assert beats[0].gpus == []  # no NVML on this machine: no GPUs, no crash
        health = await store.health(endpoint)
        assert (health.workers.running, health.jobs.inProgress) == (1, 1)
        gate.set()
        await store.wait(rec.id, 5)
    assert await store.workers(endpoint) == []  # deregistered on stop


async def test_a_job_taken_again_while_its_old_attempt_runs_here_keeps_only_the_new_one(
        store, endpoint, worker_factory) -> None:
    """Redis away longer than a lease: the job is requeued while this worker still runs it, and
    this worker (a free slot) takes it back. The old attempt is stopped; the new one is the one
    tracked and renewed, and its result is the job's (before, the old attempt's end dropped the
    new one from the worker's books, so it went unrenewed and was reaped again and again)."""
    from serverless.store import now_ms

    calls: list[int] = []
    first_cancelled, second_running, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def handler(job):
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                first_cancelled.set()
                raise
        second_running.set()
        await release.wait()
        return {"call": len(calls)}

    async with worker_factory(handler, concurrency_modifier=lambda current: 2) as worker:
        rec = await store.submit(endpoint, req({}))
        for _ in range(250):
            if calls:
                break
            await asyncio.sleep(0.02)
        assert await store.reap(endpoint, now=now_ms() + 60_000) == (1, 0)  # its lease "ran out"
        await asyncio.wait_for(second_running.wait(), 5)
        await asyncio.wait_for(first_cancelled.wait(), 2)
        await asyncio.sleep(0.1)  # the old attempt's end has been handled
        assert worker.active[rec.id].reporter.attempt == 2
        release.set()
        done = await store.wait(rec.id, 10)
    assert (done.status, done.attempt, out(done)) == (Status.COMPLETED, 2, {"call": 2})


# ---- stopping while waiting on the doorbell (the take is sent behind the BLPOP) -----------

async def test_a_stop_cuts_the_doorbell_wait_short(store, endpoint, worker_factory, monkeypatch) -> None:
    from worker import runtime

    monkeypatch.setattr(runtime, "BELL_WAIT_S", 30.0)  # only the wake can end the wait in time
    running = worker_factory(async_handler)
    await running.__aenter__()
    await asyncio.sleep(0.3)  # idle: blocked on the doorbell
    t0 = time.monotonic()
    await running.__aexit__(None, None, None)  # request_stop, then the worker's task ends
    assert time.monotonic() - t0 < 2.0


async def test_a_job_the_take_brings_after_a_stop_goes_back_to_the_queue(
        store, endpoint, worker_factory, caplog) -> None:
    """The stop comes while the doorbell wait's take is on its way: the job it leased is not
    started here but requeued, its try not counted."""
    calls: list[str] = []

    async def handler(job):
        calls.append(job["id"])

    caplog.set_level("INFO", logger="podq.worker")
    async with worker_factory(handler) as worker:
        await asyncio.sleep(0.3)  # idle: blocked on the doorbell
        # the submit and the stop's wake go out in one write on the worker's own connection:
        # the ring wakes the wait, whose take leases the job after the stop was asked
        submitting = asyncio.ensure_future(worker.store.submit(endpoint, req({"x": 1})))
        await asyncio.sleep(0)
        worker.request_stop()
        rec = await submitting
        for _ in range(100):
            if "handed back to the queue" in caplog.text:
                break
            await asyncio.sleep(0.02)
    got = await store.get(rec.id)
    assert (got.status, got.tries, got.worker_id, calls) == (Status.IN_QUEUE, 0, None, [])
    assert f"job {rec.id}: taken as the worker stopped" in caplog.text


async def test_sequential_jobs_are_taken_behind_the_doorbell(store, endpoint, worker_factory) -> None:
    """A worker that ran its job and went idle while waiting on the bell sends its take behind
    the BLPOP: the next job is leased as its ring wakes the worker, with no take after it.
    (At concurrency 1 a take that fills the only slot cannot tell the queue is empty, so the
    next one, once the job ends, is a take_many that finds nothing.)"""
    async with worker_factory(async_handler, concurrency_modifier=lambda current: 10) as worker:
        await asyncio.sleep(0.2)
        calls = 0
        take_many = worker.store.take_many

        async def counted(*args, **kw):
            nonlocal calls
            calls += 1
            return await take_many(*args, **kw)

        worker.store.take_many = counted
        for i in range(5):
            done = await submit_and_wait(store, endpoint, {"x": i})
            assert done.status is Status.COMPLETED
    assert calls == 0


async def test_the_take_behind_the_doorbell_goes_out_with_the_last_result(
    store, endpoint, worker_factory
) -> None:
    """When the only job here is writing its result, the take behind the bell is already on
    its way (sent in the same loop turn as the result, not after the result's reply)."""
    seen: list[bool] = []
    async with worker_factory(async_handler, concurrency_modifier=lambda current: 10) as worker:
        await asyncio.sleep(0.2)
        finish = worker.store.finish

        async def finish_watched(*args, **kw):
            wait = worker._doorbell
            seen.append(wait is not None and wait._taking is not None)
            return await finish(*args, **kw)

        worker.store.finish = finish_watched
        for i in range(3):
            done = await submit_and_wait(store, endpoint, {"x": i})
            assert done.status is Status.COMPLETED
    assert seen and all(seen), seen
