"""/runsync answers from the done message when the worker's result is small: the message a
worker's final write publishes carries status, times, worker and result for `sync-` jobs; the
waiter answers without reading the job back, and anything else still reads it."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from redis.exceptions import ResponseError

from serverless import keys
from serverless import store as store_module
from serverless.lifecycle import ended_as_announced, status_body
from serverless.model import JobRecord, RunRequest, Status
from serverless.store import JobStore

SUBMITTED = JobRecord(id="sync-1-e1", endpoint="e", status=Status.IN_QUEUE,
                      input=msgspec.Raw(b"{}"), submitted_at=1000)


@pytest.mark.parametrize(("text", "expected"), [
    ("COMPLETED\n1010\n1030\nw1\no{\"a\": 1}",
     {"status": "COMPLETED", "delayTime": 10, "executionTime": 20, "workerId": "w1",
      "output": {"a": 1}}),
    ("FAILED\n1010\n1030\nw1\neboom\nline two",
     {"status": "FAILED", "delayTime": 10, "executionTime": 20, "workerId": "w1",
      "error": "boom\nline two"}),
    ("COMPLETED\n1010\n1030\nw1\n-", {"status": "COMPLETED", "delayTime": 10,
                                      "executionTime": 20, "workerId": "w1"}),
    # never started: delayTime runs to "now" (99,999), as it does for a record read back
    ("TIMED_OUT\n\n1050\n\ne too slow", {"status": "TIMED_OUT", "delayTime": 98_999,
                                         "executionTime": 0, "error": " too slow"}),
])
def test_an_announced_end_shapes_the_same_body_as_a_read(text: str, expected: dict) -> None:
    record = ended_as_announced(SUBMITTED, text)
    assert record is not None
    body = msgspec.json.decode(msgspec.json.encode(status_body(record, 99_999)))
    assert body == {"id": "sync-1-e1", **expected}


@pytest.mark.parametrize("text", [
    "", "COMPLETED", "COMPLETED\n1\n2\nw\n", "COMPLETED\n1\n2\nw\nxjunk", "IN_PROGRESS\n1\n2\nw\n-",
    "NOPE\n1\n2\nw\n-", "COMPLETED\nx\n2\nw\n-",
])
def test_anything_else_is_not_an_end_and_the_job_is_read(text: str) -> None:
    assert ended_as_announced(SUBMITTED, text) is None


async def hgetalls(store: JobStore) -> int:
    stats = await store.redis.info("commandstats")
    return stats.get("cmdstat_hgetall", {}).get("calls", 0)


async def worker(store: JobStore, endpoint: str, *, output: bytes | None = None,
                 error: str | None = None, status: Status = Status.COMPLETED) -> None:
    while (taken := await store.take(endpoint, "w1")) is None:
        await asyncio.sleep(0.01)
    await store.finish(taken.id, taken.attempt, status, output=output, error=error)


async def test_runsync_answers_a_small_result_without_reading_the_job(store: JobStore, endpoint: str) -> None:
    before = await hgetalls(store)
    task = asyncio.create_task(worker(store, endpoint, output=b'{"text": "a\\nb"}'))
    done = await store.submit_and_wait(endpoint, RunRequest(input=msgspec.Raw(b"{}")), 5)
    await task
    assert await hgetalls(store) == before
    assert done.status is Status.COMPLETED and done.worker_id == "w1"
    assert msgspec.json.decode(done.output) == {"text": "a\nb"}
    stored = await store.get(done.id)
    assert (stored.started_at, stored.finished_at) == (done.started_at, done.finished_at)


async def test_a_failure_is_announced_with_its_error(store: JobStore, endpoint: str) -> None:
    task = asyncio.create_task(worker(store, endpoint, error="boom", status=Status.FAILED))
    done = await store.submit_and_wait(endpoint, RunRequest(input=msgspec.Raw(b"{}")), 5)
    await task
    assert (done.status, done.error, done.output) == (Status.FAILED, "boom", None)


async def test_a_large_result_is_read_back_not_published(store: JobStore, endpoint: str) -> None:
    big = msgspec.json.encode({"blob": "x" * 100_000})
    before = await hgetalls(store)
    task = asyncio.create_task(worker(store, endpoint, output=big))
    done = await store.submit_and_wait(endpoint, RunRequest(input=msgspec.Raw(b"{}")), 5)
    await task
    assert bytes(done.output) == big
    assert await hgetalls(store) > before


async def test_only_sync_jobs_carry_their_result_and_others_announce_their_id(
        store: JobStore, endpoint: str) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(keys.done(endpoint))
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    queued = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}")))
    synced = await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}")), sync=True)
    for _ in range(2):
        taken = await store.take(endpoint, "w1")
        await store.finish(taken.id, taken.attempt, Status.COMPLETED, output=b"7")
    messages = []
    while len(messages) < 2:
        m = await pubsub.get_message(timeout=2, ignore_subscribe_messages=True)
        assert m is not None
        messages.append(m["data"].decode())
    await pubsub.aclose()
    assert messages[0] == queued.id
    job_id, _, end = messages[1].partition("\n")
    assert job_id == synced.id and end.startswith("COMPLETED\n") and end.endswith("\nw1\no7")
    await store.cancel(queued.id)  # ended already: nothing more to announce


async def test_a_runsync_submit_is_sent_again_when_redis_lost_the_functions(
        store: JobStore, endpoint: str) -> None:
    """A /runsync whose submit meets 'function not found' (Redis restarted without its
    functions) loads the library again, submits once more and completes."""
    await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}")))  # loaded by this store
    await store.take(endpoint, "w1")
    await store.redis.execute_command("FUNCTION", "FLUSH")  # as a restart without persistence
    task = asyncio.create_task(worker(store, endpoint, output=b"1"))
    done = await store.submit_and_wait(endpoint, RunRequest(input=msgspec.Raw(b"{}")), 5)
    await task
    assert done.status is Status.COMPLETED and msgspec.json.decode(done.output) == 1


async def test_a_runsync_submit_that_fails_raises_at_once(
        store: JobStore, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A submit Redis refuses fails the /runsync with that error at once, not after a wait
    for the job's end."""
    await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"{}")))  # loaded by this store
    # a key of another type under the next id makes the submit's HSET fail (WRONGTYPE)
    job_id = "sync-wrongtype-e1"
    await store.redis.set(keys.job(job_id), "not a hash")
    monkeypatch.setattr(store_module, "new_job_id", lambda sync: job_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.submit_and_wait(endpoint, RunRequest(input=msgspec.Raw(b"{}")), 30)
    assert loop.time() - started < 0.5
