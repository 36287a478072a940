"""Plain arq with a short poll_delay (5 ms instead of its default 0.5 s) and a no-op job."""

import os

from arq.connections import RedisSettings


async def noop(ctx):
    return None


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
    poll_delay = 0.005
