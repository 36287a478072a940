"""The worker's periodic duties, each driven by `serverless.periodic.every(interval, duty)`.

- renew: extend the leases of running jobs; jobs whose lease was lost are stopped locally
- beat: write the worker's state, jobs, concurrency and GPU facts to the registry
- reap: requeue jobs of dead workers of the same endpoint (idempotent, any worker may do it)
- watch_cancels: a pub/sub subscription that stops a running job the moment it is cancelled
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from serverless import keys
from serverless.notify import listen_forever


async def watch_cancels(redis: Redis, endpoint: str, on_cancel: Callable[[str], None]) -> None:
    """Call `on_cancel(job_id)` for every running job of `endpoint` that gets cancelled."""
    await listen_forever(redis, keys.cancel(endpoint), on_cancel, name="cancel watch")
