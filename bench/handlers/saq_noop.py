"""SAQ with a no-op job: `python -m saq bench.handlers.saq_noop.settings` (one worker process).

SAQ's defaults: concurrency 10 (podq's noop handler and arq take 10 at once too), and
dequeue_timeout 0, i.e. the worker blocks on BLMOVE until a job arrives (no polling)."""

import os

from saq import Queue


async def noop(ctx):
    return None


settings = {
    "queue": Queue.from_url(os.environ["BENCH_REDIS_URL"]),
    "functions": [noop],
    "concurrency": 10,
}
