"""Store-level benchmark (no HTTP): podq's job store + worker runtime vs plain arq.

    .venv/bin/python bench/store_roundtrip.py [--quick]

1. latency: 200 sequential no-op jobs, submit -> result, p50/p90/p99 (1 worker process each)
2. throughput: 20,000 no-op jobs submitted by 64 concurrent clients, 4 worker processes each;
   jobs/s from the first submit until the queue is empty and nothing runs.
arq runs with its default settings (poll_delay 0.5 s, max_jobs 10, pickle) and `Job.result()`'s
default polling, as a user gets it from `pip install arq`; podq's workers also take 10 jobs at once.
Both use the same private redis-server, started here.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import msgspec

from bench.common import ROOT, fan_out, sequential, machine, percentile, spawn, start_redis, stop, table

from arq.connections import RedisSettings, create_pool  # noqa: E402

from serverless.model import RunRequest  # noqa: E402
from serverless.queue import connect  # noqa: E402
from serverless.settings import Settings  # noqa: E402
from serverless.store import JobStore  # noqa: E402

NOOP = RunRequest(input=msgspec.Raw(b"{}"))
EP = "bench"


def podq_workers(url: str, n: int) -> list:
    return [spawn([sys.executable, "-m", "worker", "bench/handlers/noop.py", "--endpoint", EP,
                   "--redis", url, "--worker-id", f"bench-{i}"]) for i in range(n)]


def arq_workers(url: str, n: int) -> list:
    return [spawn([sys.executable, "-m", "arq", "bench.handlers.arq_noop.WorkerSettings"],
                  {"BENCH_REDIS_URL": url}) for _ in range(n)]


async def wait_podq_ready(store: JobStore, n: int) -> None:
    while len(await store.workers(EP)) < n:
        await asyncio.sleep(0.05)


async def podq_latency(store: JobStore, count: int) -> list[float]:
    async def roundtrip() -> None:
        done = await store.wait((await store.submit(EP, NOOP)).id, 30)
        assert done is not None and done.status == "COMPLETED", done

    return await sequential(roundtrip, count)


async def arq_latency(pool, count: int) -> list[float]:
    async def roundtrip() -> None:
        await (await pool.enqueue_job("noop")).result(timeout=30)

    return await sequential(roundtrip, count)


async def podq_throughput(store: JobStore, total: int) -> float:
    t0 = time.perf_counter()
    await fan_out(total, 64, lambda: store.submit(EP, NOOP))
    while True:
        h = await store.health(EP)
        if h.jobs.inQueue == 0 and h.jobs.inProgress == 0:
            break
        await asyncio.sleep(0.01)
    return total / (time.perf_counter() - t0)


async def arq_throughput(pool, total: int) -> float:
    t0 = time.perf_counter()
    await fan_out(total, 64, lambda: pool.enqueue_job("noop"))
    while await pool.zcard("arq:queue"):
        await asyncio.sleep(0.01)
    return total / (time.perf_counter() - t0)


async def run_podq(url: str, seq: int, total: int) -> tuple[list[float], float]:
    store = JobStore(await connect(url), Settings(redis_url=url))
    procs = podq_workers(url, 1)
    try:
        await wait_podq_ready(store, 1)
        await podq_latency(store, 20)  # warm-up
        lat = await podq_latency(store, seq)
    finally:
        stop(procs)
    procs = podq_workers(url, 4)
    try:
        await wait_podq_ready(store, 4)
        rate = await podq_throughput(store, total)
    finally:
        stop(procs)
        await store.close()
    return lat, rate


async def run_arq(url: str, seq: int, total: int) -> tuple[list[float], float]:
    pool = await create_pool(RedisSettings.from_dsn(url))
    procs = arq_workers(url, 1)
    try:
        await asyncio.sleep(2)
        lat = await arq_latency(pool, seq)
    finally:
        stop(procs)
    procs = arq_workers(url, 4)
    try:
        await asyncio.sleep(2)
        rate = await arq_throughput(pool, total)
    finally:
        stop(procs)
        await pool.aclose()
    return lat, rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 round trips, 5,000 jobs")
    args = parser.parse_args()
    seq, total = (50, 5_000) if args.quick else (200, 20_000)
    redis = start_redis()
    try:
        ours_lat, ours_rate = await run_podq(redis.url, seq, total)
        await (await connect(redis.url)).flushall()
        arq_lat, arq_rate = await run_arq(redis.url, seq, total)
    finally:
        redis.stop()
    rows = [
        ("round trip p50 (ms)", percentile(ours_lat, 50), percentile(arq_lat, 50), True),
        ("round trip p90 (ms)", percentile(ours_lat, 90), percentile(arq_lat, 90), True),
        ("round trip p99 (ms)", percentile(ours_lat, 99), percentile(arq_lat, 99), True),
        (f"throughput, {total:,} jobs, 4 workers (jobs/s)", ours_rate, arq_rate, False),
    ]
    print(f"\nStore round trip, no HTTP ({seq} sequential; {total:,} jobs by 64 clients)")
    print(f"machine: {machine()}\n")
    print(table(rows, "arq (defaults)"))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
