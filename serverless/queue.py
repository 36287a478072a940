"""The seam around arq: connections to Redis, and the doorbell idle workers block on.

podq keeps arq's model of a queue (one sorted set of job ids per queue, scored by the time a job
may run, ids deduplicated on enqueue) and uses arq's connection layer (`RedisSettings.from_dsn`
for redis://, rediss:// and unix:// URLs, Sentinel, `create_pool` with connect retries). It does
not use arq's polling `Worker`, because every limit listed in shared/reference/arq-and-queues.md
section 1.11 would land on our users:

- pickup bound to `poll_delay` (0.5 s)     -> workers block on a per-endpoint doorbell list
                                              (BLPOP); a submit rings it in the same script
- running jobs hide new ones (queue_read_limit) -> a take moves the job from the queue zset to
                                              a leases zset, so the queue holds queued jobs only
- pickle by default                         -> JSON (msgspec) only, see codec.py
- no heartbeat, TTL = max job timeout + 10 s -> leases renewed every heartbeat, reaped on expiry
- last writer wins on results               -> every worker write is fenced by the attempt number

This is the only module that imports arq: replacing its connection layer changes one file.
"""

from __future__ import annotations

import asyncio

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys
from serverless.errors import RedisUnavailable


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 3
    settings.conn_retry_delay = 0.5
    return settings


async def connect(url: str) -> ArqRedis:
    """A pooled client for `url`; raises RedisUnavailable naming the URL and the fix."""
    try:
        return await create_pool(redis_settings(url))
    except (OSError, RedisError, asyncio.TimeoutError) as e:
        raise RedisUnavailable(url, e) from e


async def connect_single(url: str) -> Redis:
    """A client with a pool of one connection, for blocking reads and subscriptions."""
    pool = await connect(url)
    pool.connection_pool.max_connections = 1
    return pool


async def wait_for_work(blocking: Redis, endpoint: str, timeout_s: float) -> bool:
    """Block until a submit rings the endpoint's doorbell (True) or `timeout_s` passes (False)."""
    return await blocking.blpop([keys.bell(endpoint)], timeout=timeout_s) is not None
