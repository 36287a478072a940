"""`every(interval, duty)`: the one loop behind every periodic duty (a worker's renew, beat and
reap; the gateway's reaper). A run that cannot reach Redis is logged and the loop goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

log = logging.getLogger("podq")


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
