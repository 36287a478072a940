"""The worker's periodic duties, each one coroutine driven by `every(interval, duty)`.

- renew: extend the leases of running jobs; jobs whose lease was lost are stopped locally
- beat: write the worker's state, jobs, concurrency and GPU facts to the registry
- reap: requeue jobs of dead workers of the same endpoint (idempotent, any worker may do it)
- watch_cancels: a pub/sub subscription that stops a running job the moment it is cancelled
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys
from serverless.notify import listen_forever

log = logging.getLogger("podq.worker")


async def every(interval_s: float, duty: Callable[[], Awaitable[None]]) -> None:
    """Run `duty` every `interval_s` until cancelled; a failing run is logged, not fatal."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await duty()
        except (RedisError, OSError) as e:
            log.warning("%s failed: %s (retrying)", getattr(duty, "__name__", duty), e)
        await asyncio.sleep(max(0.0, interval_s - (loop.time() - started)))


async def watch_cancels(redis: Redis, endpoint: str, on_cancel: Callable[[str], None]) -> None:
    """Call `on_cancel(job_id)` for every running job of `endpoint` that gets cancelled."""
    await listen_forever(redis, keys.cancel(endpoint), on_cancel, name="cancel watch")
