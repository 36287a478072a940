"""The per-minute history: one replica writes each minute, the list stays capped, and the
points are what the cluster figures say (real Redis)."""

from __future__ import annotations

import asyncio

import msgspec

from serverless.console import history
from serverless.model import RunRequest, Status
from serverless.store import JobStore
from tests.conftest import register

MIN = history.MINUTE_MS


async def test_one_replica_writes_each_minute(store: JobStore, endpoint: str) -> None:
    await register(store, endpoint)
    for _ in range(3):
        await store.submit(endpoint, RunRequest(input=msgspec.Raw(b"1")))
    t = 1_800_000_000_000
    # two replicas' samplers in the same minute: one write
    wrote = await asyncio.gather(*(history.sample(store.redis, t + i, 900) for i in range(2)))
    assert sorted(wrote) == [False, True]
    assert await history.read(store.redis, endpoint) == [history.Point(t, 3, 0, 0, 0)]
    taken = await store.take(endpoint, "w1")
    assert taken is not None
    await store.finish(taken.id, taken.attempt, Status.COMPLETED, output=b"1")
    assert await history.sample(store.redis, t + MIN + 5, 900)
    points = await history.read(store.redis, endpoint)
    assert points[-1] == history.Point(t + MIN, 2, 0, 0, 1)
    assert history.rate_per_s(points) == 1 / 60
    assert await history.read(store.redis, endpoint, since_ms=t + 1) == points[1:]


async def test_the_history_is_capped(store: JobStore, endpoint: str) -> None:
    await register(store, endpoint)
    t = 1_800_000_000_000
    for i in range(7):
        assert await history.sample(store.redis, t + i * MIN, 900, points=5)
    points = await history.read(store.redis, endpoint)
    assert [p.minute_ms for p in points] == [t + i * MIN for i in range(2, 7)]


def test_rate_needs_two_points() -> None:
    assert history.rate_per_s([]) is None
    assert history.rate_per_s([history.Point(0, 0, 0, 0, 5)]) is None
    assert history.rate_per_s([history.Point(0, 0, 0, 0, 5), history.Point(MIN, 0, 0, 0, 5)]) == 0
