from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from serverless.codec import run_request_decoder
from serverless.errors import BadRequest, Conflict, NotFound
from serverless.model import Policy, RunRequest, Status
from serverless.store import JobStore, new_job_id, now_ms


def req(payload: object = None, **kw: object) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode(payload or {"x": 1})), **kw)


async def test_submit_take_complete_roundtrip(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req({"prompt": "hi"}))
    assert rec.status is Status.IN_QUEUE and rec.id.endswith("-u1")
    taken = await store.take(endpoint, "w1")
    assert taken is not None and taken.id == rec.id and taken.attempt == 1
    assert msgspec.json.decode(taken.input) == {"prompt": "hi"}
    got = await store.get(rec.id)
    assert got.status is Status.IN_PROGRESS and got.worker_id == "w1"
    res = await store.finish(rec.id, 1, Status.COMPLETED, output=b'{"ok":true}')
    assert res.outcome == "ok"
    done = await store.get(rec.id)
    assert done.status is Status.COMPLETED
    assert msgspec.json.decode(done.output) == {"ok": True}
    assert done.finished_at is not None
    ttl = await store.redis.pttl(f"podq:job:{rec.id}")
    assert 0 < ttl <= store.settings.result_ttl_run_ms


async def test_sync_jobs_get_sync_ids_and_short_retention(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req(), sync=True)
    assert rec.id.startswith("sync-") and rec.id.endswith("-e1")
    taken = await store.take(endpoint, "w")
    await store.finish(taken.id, taken.attempt, Status.COMPLETED, output=b"1")
    assert 0 < await store.redis.pttl(f"podq:job:{rec.id}") <= store.settings.result_ttl_sync_ms


def test_generated_ids_hold_random_uuid4s() -> None:
    """Job ids are RunPod's shape around a version 4, RFC 4122 uuid, each one new."""
    ids = [new_job_id(sync=False) for _ in range(600)]  # past one 4 KiB read of randomness
    assert len(set(ids)) == len(ids)
    for job_id in ids:
        u = uuid.UUID(job_id.removesuffix("-u1"))
        assert str(u) == job_id.removesuffix("-u1") and u.version == 4
        assert u.variant == uuid.RFC_4122
    assert new_job_id(sync=True).startswith("sync-")


async def test_duplicate_id_is_refused(store: JobStore, endpoint: str) -> None:
    await store.submit(endpoint, req(), job_id="same")
    with pytest.raises(Conflict, match="already exists"):
        await store.submit(endpoint, req(), job_id="same")


async def test_bad_ids_are_refused_not_injected(store: JobStore) -> None:
    with pytest.raises(BadRequest, match="invalid endpoint id"):
        await store.submit("a b", req())
    assert await store.get("../../etc") is None
    assert await store.cancel("x y") is None


async def test_fenced_finish_rejects_stale_attempt(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    first = await store.take(endpoint, "w1")
    # lease runs out: the reaper gives the job to another worker
    assert await store.reap(endpoint, now=first_deadline_passed()) == (1, 0)
    second = await store.take(endpoint, "w2")
    assert second.attempt == 2
    stale = await store.finish(rec.id, first.attempt, Status.COMPLETED, output=b'"late"')
    assert stale.outcome == "stale"
    assert (await store.finish(rec.id, second.attempt, Status.COMPLETED, output=b'"new"')).outcome == "ok"
    assert bytes((await store.get(rec.id)).output) == b'"new"'
    assert (await store.health(endpoint)).jobs.retried == 1


def first_deadline_passed() -> int:
    import time

    return int(time.time() * 1000) + 60_000


async def test_lease_loss_after_last_attempt_fails_with_clear_error(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    for _ in range(store.settings.max_attempts):
        assert await store.take(endpoint, "w") is not None
        await store.reap(endpoint, now=first_deadline_passed())
    final = await store.get(rec.id)
    assert final.status is Status.FAILED
    assert "worker lost during attempt 3" in final.error
    assert (await store.health(endpoint)).jobs.retried == 2


async def test_the_submitters_max_attempts_holds_whoever_reaps(store: JobStore, endpoint: str) -> None:
    """A gateway set to 1 attempt submits; a reaper set to 5 (a worker with the default, or a
    container that never got the operator's setting) still fails the job after one."""
    submitter = JobStore(store.redis, msgspec.structs.replace(store.settings, max_attempts=1))
    reaper = JobStore(store.redis, msgspec.structs.replace(store.settings, max_attempts=5))
    rec = await submitter.submit(endpoint, req())
    assert await reaper.take(endpoint, "w") is not None
    assert await reaper.reap(endpoint, now=first_deadline_passed()) == (0, 1)
    final = await store.get(rec.id)
    assert final.status is Status.FAILED and "worker lost during attempt 1" in final.error


async def test_renew_keeps_lease_and_reports_lost(store: JobStore, endpoint: str) -> None:
    a = await store.submit(endpoint, req())
    b = await store.submit(endpoint, req())
    ta = await store.take(endpoint, "w")
    tb = await store.take(endpoint, "w")
    await store.cancel(b.id)
    lost = await store.renew(endpoint, {ta.id: ta.attempt, tb.id: tb.attempt})
    assert lost == [b.id]


async def test_cancel_queued_removes_at_once(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    cancelled = await store.cancel(rec.id)
    assert cancelled.status is Status.CANCELLED
    assert await store.take(endpoint, "w") is None
    assert (await store.health(endpoint)).jobs.inQueue == 0


async def test_cancel_running_tells_worker_and_fences_result(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    taken = await store.take(endpoint, "w")
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(f"podq:ep:{endpoint}:cancel")
    await pubsub.get_message(timeout=1)
    assert (await store.cancel(rec.id)).status is Status.CANCELLED
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    assert msg["data"] == rec.id.encode()
    await pubsub.aclose()
    assert (await store.finish(rec.id, taken.attempt, Status.COMPLETED, output=b"1")).outcome == "refused"
    assert (await store.get(rec.id)).status is Status.CANCELLED


async def test_cancel_finished_and_unknown(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    t = await store.take(endpoint, "w")
    await store.finish(rec.id, t.attempt, Status.COMPLETED, output=b"1")
    assert (await store.cancel(rec.id)).status is Status.COMPLETED
    assert await store.cancel("no-such-job") is None


async def test_retry_only_failed_or_timed_out(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req({"v": 7}))
    with pytest.raises(Conflict, match="only FAILED or TIMED_OUT"):
        await store.retry(rec.id)
    t = await store.take(endpoint, "w")
    await store.append_chunks(rec.id, t.attempt, [b"1"])
    await store.finish(rec.id, t.attempt, Status.FAILED, error="boom")
    again = await store.retry(rec.id)
    assert again.status is Status.IN_QUEUE and again.error is None and again.id == rec.id
    t2 = await store.take(endpoint, "w")
    assert t2.id == rec.id and msgspec.json.decode(t2.input) == {"v": 7} and t2.attempt == 2
    assert await store.read_chunks(rec.id) == []
    with pytest.raises(NotFound):
        await store.retry("missing-job")


async def test_ttl_expiry_before_start_times_out(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req(policy=Policy(ttl=1)))
    await asyncio.sleep(0.01)
    got = await store.get(rec.id)
    assert got.status is Status.TIMED_OUT and "ttl of 1 ms" in got.error
    other = await store.submit(endpoint, req(policy=Policy(ttl=1)))
    await asyncio.sleep(0.01)
    assert await store.take(endpoint, "w") is None
    assert (await store.get(other.id)).status is Status.TIMED_OUT


async def test_the_ttl_sweep_ends_queued_jobs_no_worker_takes(store: JobStore, endpoint: str) -> None:
    from serverless import keys

    now = now_ms()
    expired = [await store.submit(endpoint, req(policy=Policy(ttl=10_000)), now=now) for _ in range(2)]
    alive = await store.submit(endpoint, req(policy=Policy(ttl=600_000)), now=now)
    assert await store.expire_queued(endpoint, now=now + 5_000) == 0  # none has passed its ttl
    assert await store.expire_queued(endpoint, now=now + 10_000) == 2
    for rec in expired:
        got = await store.redis.hget(keys.job(rec.id), "status")
        assert got == b"TIMED_OUT"  # read raw: get() would expire it lazily itself
    assert (await store.health(endpoint)).jobs.inQueue == 1
    assert [t.id for t in await store.take_many(endpoint, "w", 5)] == [alive.id]


async def test_purge_removes_queued_only(store: JobStore, endpoint: str) -> None:
    running = await store.submit(endpoint, req())
    await store.take(endpoint, "w")
    queued = [await store.submit(endpoint, req()) for _ in range(5)]
    assert await store.purge(endpoint) == 5
    assert (await store.get(running.id)).status is Status.IN_PROGRESS
    assert [(await store.get(q.id)).status for q in queued] == [Status.CANCELLED] * 5
    h = await store.health(endpoint)
    assert (h.jobs.inQueue, h.jobs.inProgress) == (0, 1)


async def test_purge_of_more_than_one_batch_ends_them_all_as_a_single_cancel_would(
    store: JobStore, endpoint: str
) -> None:
    from serverless import keys
    from serverless.store import PURGE_BATCH

    n = PURGE_BATCH * 2 + 7
    records = [await store.submit(endpoint, req()) for _ in range(n)]
    hooked = await store.submit(endpoint, req(webhook="https://example.com/hook"))
    waiter = asyncio.create_task(store.wait(records[-1].id, 10))
    await asyncio.sleep(0.05)
    assert await store.purge(endpoint) == n + 1
    assert (await asyncio.wait_for(waiter, 5)).status is Status.CANCELLED  # woken, not timed out
    last = await store.get(records[-1].id)
    assert last.error == "removed from the queue by purge-queue" and last.finished_at
    assert 0 < await store.redis.pttl(keys.job(records[0].id)) <= last.retention_ms
    assert hooked.id.encode() in await store.redis.lrange(keys.WEBHOOKS, 0, -1)
    assert int(await store.redis.hget(keys.stats(endpoint), "cancelled")) == n + 1
    assert (await store.health(endpoint)).jobs.inQueue == 0
    assert await store.purge(endpoint) == 0


async def test_take_many_takes_the_oldest_up_to_count_each_with_its_lease(
    store: JobStore, endpoint: str
) -> None:
    from serverless import keys

    expired = await store.submit(endpoint, req(policy=Policy(ttl=10_000)), now=now_ms() - 20_000)
    queued = [await store.submit(endpoint, req({"i": i})) for i in range(5)]
    taken = await store.take_many(endpoint, "w", 3)
    # (jobs submitted in the same millisecond share a score: their order among them is free)
    assert len(taken) == 3 and expired.id not in {t.id for t in taken}
    assert all(t.attempt == 1 for t in taken)
    assert await store.redis.zcard(keys.leases(endpoint)) == 3
    assert (await store.get(expired.id)).status is Status.TIMED_OUT
    rest = await store.take_many(endpoint, "w", 10)
    assert {t.id for t in taken + rest} == {q.id for q in queued}
    assert sorted(msgspec.json.decode(t.input)["i"] for t in taken + rest) == [0, 1, 2, 3, 4]
    assert await store.take_many(endpoint, "w", 10) == []


async def test_low_priority_goes_after_normal(store: JobStore, endpoint: str) -> None:
    low = await store.submit(endpoint, req(policy=Policy(lowPriority=True)))
    normal = await store.submit(endpoint, req())
    assert (await store.take(endpoint, "w")).id == normal.id
    assert (await store.take(endpoint, "w")).id == low.id


async def test_progress_visible_then_replaced_by_result(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    t = await store.take(endpoint, "w")
    assert await store.progress(rec.id, t.attempt, b'"50%"')
    assert bytes((await store.get(rec.id)).output) == b'"50%"'
    await store.finish(rec.id, t.attempt, Status.COMPLETED, output=b'"done"')
    assert not await store.progress(rec.id, t.attempt, b'"late"')
    assert bytes((await store.get(rec.id)).output) == b'"done"'


async def test_chunks_in_order_and_drain_cursor(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    t = await store.take(endpoint, "w")
    assert await store.append_chunks(rec.id, t.attempt, [b"1", b"2"])
    assert await store.append_chunks(rec.id, t.attempt, [b"3"])
    chunks = await store.read_chunks(rec.id)
    assert [bytes(c.output) for c in chunks] == [b"1", b"2", b"3"]
    assert [bytes(c.output) for c in await store.read_chunks(rec.id, chunks[0].cursor)] == [b"2", b"3"]
    status, first = await store.drain_chunks(rec.id)
    assert status is Status.IN_PROGRESS and len(first) == 3
    assert await store.append_chunks(rec.id, t.attempt, [b"4"])
    _, second = await store.drain_chunks(rec.id)
    assert [bytes(c.output) for c in second] == [b"4"]
    assert not await store.append_chunks(rec.id, t.attempt + 1, [b"x"])


async def test_wait_wakes_on_finish_without_polling(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    t = await store.take(endpoint, "w")

    async def finish_soon() -> None:
        await asyncio.sleep(0.05)
        await store.finish(rec.id, t.attempt, Status.COMPLETED, output=b"1")

    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(finish_soon())
    done = await store.wait(rec.id, timeout_s=5)
    elapsed = loop.time() - started
    await task
    assert done.status is Status.COMPLETED
    assert elapsed < 0.5  # woken by the doorbell, not the 1 s safety re-read


async def test_wait_times_out_with_current_record(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    got = await store.wait(rec.id, timeout_s=0.1)
    assert got.status is Status.IN_QUEUE


async def test_health_counts(store: JobStore, endpoint: str) -> None:
    for _ in range(3):
        await store.submit(endpoint, req())
    a = await store.take(endpoint, "w")
    b = await store.take(endpoint, "w")
    await store.finish(a.id, a.attempt, Status.COMPLETED, output=b"1")
    await store.finish(b.id, b.attempt, Status.FAILED, error="x")
    await store.take(endpoint, "w")
    h = await store.health(endpoint)
    assert msgspec.to_builtins(h.jobs) == {
        "completed": 1, "failed": 1, "inProgress": 1, "inQueue": 0, "retried": 0,
    }


def test_request_decoder_keeps_input_raw() -> None:
    r = run_request_decoder.decode(b'{"input": {"a": [1, 2]}, "policy": {"ttl": 5000}}')
    assert bytes(r.input) == b'{"a": [1, 2]}' and r.policy.ttl == 5000


# ---- the paths the Redis functions keep exactly (serverless/lua/) ----------------------------

async def test_retried_job_is_taken_clean_with_its_old_chunks_gone(store: JobStore, endpoint: str) -> None:
    from serverless import keys

    rec = await store.submit(endpoint, req())
    first = await store.take(endpoint, "w1")
    await store.append_chunks(rec.id, first.attempt, [b"1"])
    await store.finish(rec.id, first.attempt, Status.FAILED, error="boom")
    await store.retry(rec.id)
    assert not await store.redis.exists(keys.chunks(rec.id))
    assert await store.redis.pttl(keys.job(rec.id)) == -1  # retention clock stopped
    again = await store.take(endpoint, "w2")
    assert again.attempt == 2
    got = await store.get(rec.id)
    assert (got.status, got.error, got.output, got.worker_id) == (Status.IN_PROGRESS, None, None, "w2")
    assert got.tries == 1


@pytest.mark.parametrize("how", ["lease lost", "handed back on drain"])
async def test_a_requeued_job_streams_only_its_new_attempts_chunks(store: JobStore, endpoint: str,
                                                                   how: str) -> None:
    rec = await store.submit(endpoint, req())
    first = await store.take(endpoint, "w1")
    await store.append_chunks(rec.id, first.attempt, [b'"a1-c1"', b'"a1-c2"'])
    if how == "lease lost":
        assert await store.reap(endpoint, now=first_deadline_passed()) == (1, 0)
    else:
        assert await store.requeue(rec.id, first.attempt)
    assert await store.read_chunks(rec.id) == []  # nothing of the lost attempt is served
    again = await store.take(endpoint, "w2")
    await store.append_chunks(rec.id, again.attempt, [b'"a2-c1"'])
    assert [bytes(c.output) for c in await store.read_chunks(rec.id)] == [b'"a2-c1"']


async def test_requeue_on_drain_does_not_count_a_try(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    t = await store.take(endpoint, "w1")
    assert await store.progress(rec.id, t.attempt, b'"half"')
    assert await store.requeue(rec.id, t.attempt)
    got = await store.get(rec.id)
    assert (got.status, got.output, got.worker_id, got.tries) == (Status.IN_QUEUE, None, None, 0)
    assert (h := await store.health(endpoint)).jobs.inQueue == 1 and h.jobs.inProgress == 0
    again = await store.take(endpoint, "w2")
    assert (again.id, again.attempt) == (rec.id, 2)


async def test_the_doorbell_rings_for_an_empty_queue_and_a_take_rings_for_what_it_leaves(
    store: JobStore, endpoint: str
) -> None:
    from serverless import keys

    bell = keys.bell(endpoint)
    for _ in range(30):
        await store.submit(endpoint, req())
    assert await store.redis.llen(bell) == 1  # the first job rang; the others found it queued
    assert await store.redis.blpop([bell], timeout=1) is not None  # an idle worker wakes ...
    assert len(await store.take_many(endpoint, "w1", 10)) == 10  # ... has room for 10 of 30
    assert await store.redis.llen(bell) == 1  # and rings for the next idle worker
    assert len(await store.take_many(endpoint, "w2", 20)) == 20  # the rest: the queue is empty
    assert await store.redis.llen(bell) == 0  # an empty queue silences the bell
    await store.submit(endpoint, req())
    assert await store.redis.llen(bell) == 1
    for _ in range(keys.BELL_CAP + 10):  # rings from takes that leave jobs are capped
        await store.submit(endpoint, req())
        await store.redis.lpush(bell, "1")
    assert await store.redis.llen(bell) == keys.BELL_CAP + 11
    assert len(await store.take_many(endpoint, "w1", 1)) == 1
    assert await store.redis.llen(bell) == keys.BELL_CAP
    assert len(await store.take_many(endpoint, "w1", 1000)) == keys.BELL_CAP + 10
    assert await store.redis.llen(bell) == 0


async def test_runpod_take_keeps_the_deadline_and_the_hand_off(store: JobStore, endpoint: str) -> None:
    from serverless import keys

    now = now_ms()
    own = await store.submit(endpoint, req(policy=Policy(executionTimeout=5_000)))
    other = await store.submit(endpoint, req())
    taken = await store.take_for_runpod(endpoint, "rp1", 2, 60_000, now=now)
    assert [t.id for t in taken] == [own.id, other.id] or [t.id for t in taken] == [other.id, own.id]
    deadlines = dict(await store.redis.zrange(keys.deadlines(endpoint), 0, -1, withscores=True))
    assert deadlines == {own.id.encode(): now + 5_000, other.id.encode(): now + 60_000}
    assert await store.redis.smembers(keys.held(endpoint, "rp1")) == {own.id.encode(), other.id.encode()}
    lease = await store.redis.zscore(keys.leases(endpoint), own.id)
    assert lease == now + store.settings.runpod_lease_ms
    got = await store.get(own.id)
    assert got.started_at == now and got.worker_id == "rp1"
    # the worker finishes one: it leaves every index; it is cancelled out of the other
    await store.finish(own.id, 1, Status.COMPLETED, output=b"1")
    assert await store.redis.smembers(keys.held(endpoint, "rp1")) == {other.id.encode()}
    assert await store.redis.zscore(keys.deadlines(endpoint), own.id) is None
    await store.cancel(other.id)
    assert await store.pop_stops(endpoint, "rp1", 0.1) == [other.id]
    assert await store.redis.zcard(keys.deadlines(endpoint)) == 0
    assert await store.redis.zcard(keys.leases(endpoint)) == 0


async def test_a_runpod_job_requeued_after_a_lost_lease_is_no_longer_held(store: JobStore,
                                                                          endpoint: str) -> None:
    from serverless import keys

    now = now_ms()
    rec = await store.submit(endpoint, req())
    await store.take_for_runpod(endpoint, "rp1", 1, 600_000, now=now)
    assert await store.redis.smembers(keys.held(endpoint, "rp1")) == {rec.id.encode()}
    assert await store.reap(endpoint, now=now + store.settings.runpod_lease_ms + 1) == (1, 0)
    assert (await store.get(rec.id)).status is Status.IN_QUEUE
    assert await store.redis.smembers(keys.held(endpoint, "rp1")) == set()
    assert await store.redis.zcard(keys.deadlines(endpoint)) == 0


async def test_runpod_job_past_its_execution_timeout_is_reaped_timed_out(
    store: JobStore, endpoint: str
) -> None:
    now = now_ms()
    rec = await store.submit(endpoint, req(policy=Policy(executionTimeout=1_000)))
    await store.take_for_runpod(endpoint, "rp1", 1, 60_000, now=now)
    assert await store.ping_runpod_jobs(endpoint, "rp1", [rec.id], now=now + 500) == []
    assert await store.reap(endpoint, now=now + 1_000) == (0, 0)
    got = await store.get(rec.id)
    assert got.status is Status.TIMED_OUT and "executionTimeout of 1000 ms" in got.error
    assert await store.pop_stops(endpoint, "rp1", 0.1) == [rec.id]
    # still running it: the next ping lists it again, and its stop is sent again
    assert await store.ping_runpod_jobs(endpoint, "rp1", [rec.id], now=now + 1_500) == [rec.id]
    assert await store.pop_stops(endpoint, "rp1", 0.1) == [rec.id]


async def test_runpod_worker_holding_nothing_gives_its_jobs_back(store: JobStore, endpoint: str) -> None:
    from serverless import keys

    rec = await store.submit(endpoint, req())
    await store.take_for_runpod(endpoint, "rp1", 1, 60_000)
    assert await store.release_runpod_worker(endpoint, "rp1") == 1
    got = await store.get(rec.id)
    assert (got.status, got.tries, got.worker_id) == (Status.IN_QUEUE, 0, None)
    assert await store.redis.zcard(keys.deadlines(endpoint)) == 0
    assert not await store.redis.exists(keys.held(endpoint, "rp1"))
    assert (await store.take(endpoint, "w")).attempt == 2


async def test_take_many_past_a_thousand_slots(store: JobStore, endpoint: str) -> None:
    """Lua's unpack() yields a few thousand values at most: leases are added in slices."""
    from serverless import keys

    records = [await store.submit(endpoint, req()) for _ in range(1_500)]
    taken = await store.take_many(endpoint, "w", 2_000)
    assert len(taken) == 1_500 and await store.redis.zcard(keys.leases(endpoint)) == 1_500
    attempts = {t.id: t.attempt for t in taken}
    assert await store.renew(endpoint, attempts) == []
    assert {t.id for t in taken} == {r.id for r in records}


async def test_a_job_without_its_own_timeout_takes_its_endpoints_current_one(store: JobStore) -> None:
    from serverless.model import EndpointConfig, Template
    from serverless.registry import Registry

    registry = Registry(store.redis)
    await registry.put_template(Template(id="t-timeout", name="t", handler="h.py"))
    endpoint = await registry.put_endpoint(EndpointConfig(
        id="ep-timeout", name="timeout", template_id="t-timeout", execution_timeout_ms=1_234))

    async def taken_timeout(**policy: int) -> int | None:
        request = RunRequest(input=msgspec.Raw(b"{}"), policy=Policy(**policy) if policy else None)
        await store.submit(endpoint.id, request)
        return (await store.take(endpoint.id, "w1")).execution_timeout_ms

    assert await taken_timeout() == 1_234
    await registry.put_endpoint(msgspec.structs.replace(endpoint, execution_timeout_ms=5_678))
    assert await taken_timeout() == 5_678  # the change applies to the next job, no new worker
    assert await taken_timeout(executionTimeout=9_000) == 9_000  # the job's own policy wins
    await registry.delete_endpoint(endpoint.id)
    assert await taken_timeout() is None  # in no registry: the worker's own setting applies


async def test_endpoints_stored_before_their_indexes_are_indexed_at_gateway_start(store: JobStore) -> None:
    """An upgrade: endpoints stored by an older podq have no execution-timeout (or webhook)
    index entry, so `take` could not apply their timeout. A gateway start writes the missing
    entries and leaves the ones put_endpoint wrote alone."""
    from serverless import keys
    from serverless.gateway.app import backfill_registry
    from serverless.model import EndpointConfig, Template
    from serverless.registry import Registry

    registry = Registry(store.redis)
    await registry.put_template(Template(id="t-old", name="t", handler="h.py"))
    old = await registry.put_endpoint(EndpointConfig(
        id="ep-old", name="old", template_id="t-old", execution_timeout_ms=4_321,
        webhook="https://example.com/hook"))
    current = await registry.put_endpoint(EndpointConfig(
        id="ep-new", name="new", template_id="t-old", execution_timeout_ms=1_000))
    await store.redis.hdel(keys.REGISTRY_TIMEOUTS, old.id)  # as an older podq left it
    await store.redis.hdel(keys.REGISTRY_WEBHOOKS, old.id)
    await store.redis.hset(keys.REGISTRY_TIMEOUTS, current.id, 2_000)  # not overwritten

    assert await backfill_registry(store) == 2
    assert await store.redis.hget(keys.REGISTRY_TIMEOUTS, old.id) == b"4321"
    assert await store.redis.hget(keys.REGISTRY_WEBHOOKS, old.id) == b"https://example.com/hook"
    assert await store.redis.hget(keys.REGISTRY_TIMEOUTS, current.id) == b"2000"
    await store.submit(old.id, req())
    assert (await store.take(old.id, "w1")).execution_timeout_ms == 4_321
    assert await backfill_registry(store) == 0  # nothing left to index


async def test_reaping_waits_for_workers_to_renew_after_redis_was_unreachable(
        store: JobStore, endpoint: str) -> None:
    """After an outage longer than a lease every running job's lease looks expired: a reaper
    that noted the outage holds back until live workers have had time to renew."""
    import time as clock

    settings = msgspec.structs.replace(store.settings, lease_ms=300, heartbeat_ms=100,
                                       runpod_ping_ms=1_000)
    reaper = JobStore(store.redis, settings)
    assert reaper.reap_hold_ms == 1_100
    rec = await store.submit(endpoint, req())
    await store.take(endpoint, "w1")
    reaper.note_unreachable()
    assert await reaper.reap(endpoint, now=first_deadline_passed()) == (0, 0)
    assert (await store.get(rec.id)).status is Status.IN_PROGRESS
    reaper._unreachable_at = clock.monotonic() - 1.2  # the hold has passed
    assert await reaper.reap(endpoint, now=first_deadline_passed()) == (1, 0)


async def test_a_reap_that_cannot_reach_redis_holds_reaping_back() -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from serverless.redis_server import free_port
    from serverless.settings import Settings

    unreachable = JobStore(Redis.from_url(f"redis://127.0.0.1:{free_port()}/0"), Settings())
    try:
        assert not unreachable.reaping_held()
        with pytest.raises(RedisError):
            await unreachable.reap("ep-x")
        assert unreachable.reaping_held()
    finally:
        await unreachable.close()
