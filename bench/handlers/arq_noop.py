"""Plain arq with its default settings and a no-op job (the peer in bench/store_roundtrip.py)."""

import os

from arq.connections import RedisSettings


async def noop(ctx):
    return None


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
