"""Submits hand new jobs straight to idle podq workers (serverless/lua/_lib.lua hand_off): the
idle list, the workers' inboxes, wake-ups for queued work, stale entries and leaving."""

from __future__ import annotations

import msgspec

from serverless import keys
from serverless.codec import taken_from_packed
from serverless.model import Status
from serverless.store import JobStore
from tests.test_store import req


async def inbox(store: JobStore, endpoint: str, worker: str) -> list[bytes]:
    return await store.redis.lrange(keys.inbox(endpoint, worker), 0, -1)


async def idle(store: JobStore, endpoint: str) -> list[str]:
    return [e.decode() for e in await store.redis.lrange(keys.idle(endpoint), 0, -1)]


async def test_a_take_on_an_empty_queue_registers_the_free_slots(store: JobStore, endpoint: str) -> None:
    taken, registration = await store.take_or_wait(endpoint, "w1", 3, "")
    assert taken == [] and registration == f"w1|{store.settings.lease_ms}|3"
    assert await idle(store, endpoint) == [registration]
    assert 0 < await store.redis.pttl(f"{keys.idle(endpoint)}:w1") <= keys.IDLE_REGISTRATION_MS
    # taking again replaces the entry, never adds a second one
    _, again = await store.take_or_wait(endpoint, "w1", 2, registration)
    assert await idle(store, endpoint) == [again] == [f"w1|{store.settings.lease_ms}|2"]


async def test_a_take_that_fills_every_slot_does_not_register(store: JobStore, endpoint: str) -> None:
    await store.submit(endpoint, req())
    taken, registration = await store.take_or_wait(endpoint, "w1", 1, "")
    assert len(taken) == 1 and registration == ""
    assert await idle(store, endpoint) == []


async def test_a_submit_hands_the_job_to_the_idle_worker(store: JobStore, endpoint: str) -> None:
    _, registration = await store.take_or_wait(endpoint, "w1", 2, "")
    rec = await store.submit(endpoint, req({"prompt": "hi"}))
    got = await store.get(rec.id)
    assert got.status is Status.IN_PROGRESS and got.worker_id == "w1" and got.attempt == 1
    assert await store.redis.zcard(keys.queue(endpoint)) == 0
    assert await store.redis.zscore(keys.leases(endpoint), rec.id) is not None
    [item] = await inbox(store, endpoint, "w1")
    job = taken_from_packed(endpoint, item)
    assert (job.id, job.attempt) == (rec.id, 1)
    assert msgspec.json.decode(job.input) == {"prompt": "hi"}
    # one slot left: the worker stays registered for it, at the back of the list
    assert await idle(store, endpoint) == [registration[:-1] + "1"]
    # its result is fenced by the attempt it was handed, as a taken job's
    assert (await store.finish(rec.id, 1, Status.COMPLETED, output=b"1")).outcome == "ok"


async def test_the_last_free_slot_takes_the_worker_off_the_list(store: JobStore, endpoint: str) -> None:
    await store.take_or_wait(endpoint, "w1", 1, "")
    first = await store.submit(endpoint, req())
    second = await store.submit(endpoint, req())
    assert (await store.get(first.id)).status is Status.IN_PROGRESS
    assert (await store.get(second.id)).status is Status.IN_QUEUE  # nobody idle: queued
    assert await idle(store, endpoint) == []


async def test_idle_workers_are_handed_jobs_in_turn(store: JobStore, endpoint: str) -> None:
    await store.take_or_wait(endpoint, "w1", 5, "")
    await store.take_or_wait(endpoint, "w2", 5, "")
    ids = [(await store.submit(endpoint, req())).id for _ in range(4)]
    workers = [(await store.get(i)).worker_id for i in ids]
    assert workers == ["w1", "w2", "w1", "w2"]


async def test_a_dead_idle_worker_is_skipped_and_dropped(store: JobStore, endpoint: str) -> None:
    await store.take_or_wait(endpoint, "dead", 5, "")
    await store.take_or_wait(endpoint, "alive", 5, "")
    await store.redis.delete(f"{keys.idle(endpoint)}:dead")  # its registration ran out
    rec = await store.submit(endpoint, req())
    assert (await store.get(rec.id)).worker_id == "alive"
    assert await inbox(store, endpoint, "dead") == []
    assert [e.split("|")[0] for e in await idle(store, endpoint)] == ["alive"]


async def test_with_no_live_worker_the_job_is_queued_and_the_bell_rung(store: JobStore, endpoint: str) -> None:
    await store.take_or_wait(endpoint, "dead", 5, "")
    await store.redis.delete(f"{keys.idle(endpoint)}:dead")
    rec = await store.submit(endpoint, req())
    assert (await store.get(rec.id)).status is Status.IN_QUEUE
    assert await store.redis.llen(keys.bell(endpoint)) == 1  # RunPod-protocol long-polls wait here
    assert await idle(store, endpoint) == []


async def test_work_queued_by_a_move_wakes_an_idle_worker(store: JobStore, endpoint: str) -> None:
    rec = await store.submit(endpoint, req())
    taken = await store.take(endpoint, "busy")
    _, registration = await store.take_or_wait(endpoint, "w1", 4, "")
    assert await store.requeue(taken.id, taken.attempt)  # queued again: w1 hears it
    assert await inbox(store, endpoint, "w1") == [keys.WAKE.encode()]
    assert await idle(store, endpoint) == []  # the wake-up took its entry
    again, _ = await store.take_or_wait(endpoint, "w1", 4, registration)
    assert [j.id for j in again] == [rec.id]
    assert await inbox(store, endpoint, "w1") == []  # the take emptied it


async def test_a_take_returns_what_was_handed_meanwhile_first(store: JobStore, endpoint: str) -> None:
    _, registration = await store.take_or_wait(endpoint, "w1", 3, "")
    handed = await store.submit(endpoint, req())  # handed to w1: it did not read its inbox yet
    await store.redis.delete(f"{keys.idle(endpoint)}")  # (no more hand-offs: queue the next)
    queued = await store.submit(endpoint, req())
    taken, registration = await store.take_or_wait(endpoint, "w1", 3, registration)
    assert [j.id for j in taken] == [handed.id, queued.id]
    assert registration.endswith("|1") and await idle(store, endpoint) == [registration]
    assert await inbox(store, endpoint, "w1") == []


async def test_leaving_drops_the_entry_and_returns_the_handed_jobs(store: JobStore, endpoint: str) -> None:
    await store.take_or_wait(endpoint, "w1", 3, "")
    await store.take_or_wait(endpoint, "w2", 3, "")
    rec = await store.submit(endpoint, req())
    handed = await store.unwait(endpoint, "w1")
    assert [j.id for j in handed] == [rec.id]
    assert [e.split("|")[0] for e in await idle(store, endpoint)] == ["w2"]
    assert not await store.redis.exists(f"{keys.idle(endpoint)}:w1", keys.inbox(endpoint, "w1"))
    # the worker queues them again, the try not counted: the other idle worker gets a wake-up
    assert await store.requeue(handed[0].id, handed[0].attempt)
    back = await store.get(rec.id)
    assert back.status is Status.IN_QUEUE and back.worker_id is None
    assert await inbox(store, endpoint, "w2") == [keys.WAKE.encode()]


async def test_runpod_protocol_takes_never_register(store: JobStore, endpoint: str) -> None:
    assert await store.take_for_runpod(endpoint, "rp", 3, 60_000) == []
    assert await idle(store, endpoint) == []
    rec = await store.submit(endpoint, req())
    assert (await store.get(rec.id)).status is Status.IN_QUEUE

