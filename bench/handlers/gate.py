"""Fan-out handler for bench/scenarios/scale.py: every job waits, running, until the benchmark
publishes on the Redis channel `bench:go:<endpoint>`, then yields one chunk stamped with
time.time() and returns. One subscription per worker process wakes all its jobs at once.
Concurrency per worker: $BENCH_CONCURRENCY (default 100).
"""

import asyncio
import os
import time

import redis.asyncio as aioredis

import serverless

_go: asyncio.Event | None = None


async def _listen(event: asyncio.Event) -> None:
    client = aioredis.Redis.from_url(os.environ["PODQ_REDIS_URL"])
    pubsub = client.pubsub()
    await pubsub.subscribe(f"bench:go:{os.environ['PODQ_ENDPOINT_ID']}")
    async for message in pubsub.listen():
        if message["type"] == "message":
            event.set()


def _gate() -> asyncio.Event:
    global _go
    if _go is None:
        _go = asyncio.Event()
        task = asyncio.get_running_loop().create_task(_listen(_go))
        _gate.task = task  # keep a reference: the loop holds tasks weakly
    return _go


async def handler(job):
    await _gate().wait()
    yield {"t": time.time()}


if __name__ == "__main__":
    limit = int(os.environ.get("BENCH_CONCURRENCY", "100"))
    serverless.start({"handler": handler, "concurrency_modifier": lambda current: limit})
