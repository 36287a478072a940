"""A worker's doorbell wait and the take that rides behind it (serverless/doorbell.py), against
a real redis-server: the take runs the moment the BLPOP returns, on Redis's clock, at the
timeout without a ring, cut short by the worker's wake, and again after the functions are gone."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from serverless import clock, keys
from serverless.autopipeline import AutoPipeline
from serverless.doorbell import DoorbellWait, wake
from serverless.model import RunRequest, Status
from serverless.store import JobStore


def req(payload: object = None) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode(payload if payload is not None else {})))


@pytest.fixture
async def line(store: JobStore):
    line = AutoPipeline(store.redis)
    yield line
    await line.aclose()


async def test_a_take_behind_the_bell_leases_the_job_that_rang(store: JobStore, endpoint: str, line) -> None:
    wait = DoorbellWait(store, line, endpoint, "w1", 5.0)
    assert wait.take_behind(4) and not wait.take_behind(4)  # one take per wait
    waiting = asyncio.ensure_future(wait.wait())
    await asyncio.sleep(0.2)
    assert not waiting.done()  # blocked on the bell: nothing queued
    rec = await store.submit(endpoint, req({"n": 1}))
    taken = await asyncio.wait_for(waiting, 1.0)  # the ring, not the 5 s timeout
    assert [(t.id, t.attempt, bytes(t.input)) for t in taken] == [(rec.id, 1, b'{"n":1}')]
    got = await store.get(rec.id)
    assert (got.status, got.worker_id, got.tries) == (Status.IN_PROGRESS, "w1", 1)
    lease = await store.redis.zscore(keys.leases(endpoint), rec.id)
    assert lease == got.started_at + store.settings.lease_ms


async def test_a_wait_without_a_take_answers_none_and_one_can_join_it_later(
        store: JobStore, endpoint: str, line) -> None:
    wait = DoorbellWait(store, line, endpoint, "w1", 5.0)
    waiting = asyncio.ensure_future(wait.wait())
    await asyncio.sleep(0.1)
    assert wait.take_behind(2)  # the worker went idle during the wait: the take joins it
    rec = await store.submit(endpoint, req())
    assert [t.id for t in await asyncio.wait_for(waiting, 1.0)] == [rec.id]
    alone = DoorbellWait(store, line, endpoint, "w1", 5.0)
    waiting = asyncio.ensure_future(alone.wait())
    await asyncio.sleep(0.1)
    await store.submit(endpoint, req())
    assert await asyncio.wait_for(waiting, 1.0) is None  # rang; the caller takes
    assert not alone.take_behind(2)  # too late: the BLPOP has answered


async def test_the_take_behind_the_bell_runs_on_redis_clock(
        store: JobStore, endpoint: str, line, monkeypatch) -> None:
    """It runs when the ring comes, up to its timeout after it was sent, so it reads Redis's
    TIME: a host clock 30 s behind (not synced) does not date the lease."""
    monkeypatch.setattr(clock, "_wall_ns", lambda: time.time_ns() - 30_000_000_000)
    wait = DoorbellWait(store, line, endpoint, "w1", 5.0)
    wait.take_behind(1)
    waiting = asyncio.ensure_future(wait.wait())
    await asyncio.sleep(0.1)
    await store.submit(endpoint, req(), now=int(time.time() * 1000))
    [taken] = await asyncio.wait_for(waiting, 1.0)
    started = (await store.get(taken.id)).started_at
    assert abs(started - time.time() * 1000) < 1_000


async def test_the_take_behind_the_bell_runs_at_the_timeout_without_a_ring(
        store: JobStore, endpoint: str, line) -> None:
    rec = await store.submit(endpoint, req())
    await store.redis.delete(keys.bell(endpoint))  # a lost ring: the queue is still the truth
    t0 = time.monotonic()
    wait = DoorbellWait(store, line, endpoint, "w1", 0.3)
    wait.take_behind(1)
    taken = await wait.wait()
    assert 0.25 < time.monotonic() - t0 < 1.0
    assert [t.id for t in taken] == [rec.id]


async def test_wake_cuts_only_its_own_workers_wait_short(store: JobStore, endpoint: str, line) -> None:
    other_line = AutoPipeline(store.redis)
    mine = DoorbellWait(store, line, endpoint, "w1", 10.0)
    mine.take_behind(1)
    other = DoorbellWait(store, other_line, endpoint, "w2", 10.0)
    other.take_behind(1)
    waiting = [asyncio.ensure_future(w.wait()) for w in (mine, other)]
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    await wake(store, endpoint, "w1")
    assert await asyncio.wait_for(waiting[0], 2.0) == [] and time.monotonic() - t0 < 1.0
    assert not waiting[1].done()
    await store.submit(endpoint, req())  # ends the other wait before its line closes
    assert len(await asyncio.wait_for(waiting[1], 2.0)) == 1
    await other_line.aclose()


async def test_a_take_behind_the_bell_loads_the_functions_again_after_a_flush(
        store: JobStore, endpoint: str, line) -> None:
    rec = await store.submit(endpoint, req())
    await store.redis.execute_command("FUNCTION", "FLUSH")  # as a restart without persistence
    wait = DoorbellWait(store, line, endpoint, "w1", 0.1)
    wait.take_behind(1)
    assert [t.id for t in await wait.wait()] == [rec.id]


async def test_a_user_who_may_not_run_time_takes_after_the_ring(
        store: JobStore, endpoint: str, redis_server, settings) -> None:
    """An ACL written before podq read TIME (docs/security.md): no take rides behind the bell,
    the worker takes after the ring with its own clock."""
    from serverless.queue import connect

    await store.redis.execute_command("ACL", "SETUSER", "no-time-bell", "on", ">pw", "~*", "&*",
                                      "+@all", "-time")
    try:
        limited = JobStore(await connect(redis_server.url_for("no-time-bell", "pw")), settings)
        assert not clock.may_read_redis_time()  # its connect was refused TIME
        own = AutoPipeline(limited.redis)
        wait = DoorbellWait(limited, own, endpoint, "w1", 5.0)
        assert not wait.take_behind(1)
        waiting = asyncio.ensure_future(wait.wait())
        await asyncio.sleep(0.1)
        rec = await store.submit(endpoint, req())
        assert await asyncio.wait_for(waiting, 1.0) is None
        assert [t.id for t in await limited.take_many(endpoint, "w1", 1)] == [rec.id]
        await own.aclose()
        await limited.close()
    finally:
        await store.redis.execute_command("ACL", "DELUSER", "no-time-bell")


async def test_time_taken_away_after_connecting_falls_back_to_a_take_with_the_hosts_clock(
        store: JobStore, endpoint: str, redis_server, settings) -> None:
    from serverless.queue import connect

    await store.redis.execute_command("ACL", "SETUSER", "later-no-time", "on", ">pw", "~*", "&*",
                                      "+@all")
    try:
        limited = JobStore(await connect(redis_server.url_for("later-no-time", "pw")), settings)
        await limited.take_many(endpoint, "w1", 1)  # loads the functions as this user
        await store.redis.execute_command("ACL", "SETUSER", "later-no-time", "-time")
        rec = await store.submit(endpoint, req())
        own = AutoPipeline(limited.redis)
        wait = DoorbellWait(limited, own, endpoint, "w1", 0.1)
        assert wait.take_behind(1)
        assert [t.id for t in await wait.wait()] == [rec.id]  # the take_many fallback
        assert not clock.may_read_redis_time()  # and no take rides behind the bell again
        await own.aclose()
        await limited.close()
    finally:
        await store.redis.execute_command("ACL", "DELUSER", "later-no-time")
