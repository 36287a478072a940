"""Scale: a deep queue on an endpoint with no workers, and many SSE streams open on one gateway.

Queue: N jobs through HTTP /run (64 concurrent clients) with no worker on the endpoint; the
submit rate; GET /health latency with the queue full; POST /purge-queue; Redis bytes per queued
job (INFO used_memory after - before, / N, minus the input's JSON bytes). Peers on their own
private redis-server, the same N and input: arq (`enqueue_job`, 64 concurrent) and Celery with a
Redis broker (`.delay()` from one thread, `app.control.purge()`).

Streams: M jobs running on 2 workers (bench/handlers/gate.py, M/2 jobs each, all waiting), one
SSE client per job on one gateway; then one Redis publish wakes every job, each yields one
chunk, and we time until every client got its chunk; the gateway's RSS with them all open.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp
import orjson
import psutil
import redis.asyncio as aioredis

from bench.common import fan_out, percentile, sequential, start_redis, stop
from bench.report import Row, Section
from bench.common import wait_http
from bench.scenarios.streaming import AUTH, SSE, spawn_gateway, spawn_worker, submit, wait_workers
from serverless.redis_server import free_port

EP = "deep"
FAN = "fan"
INPUT = {"prompt": "a queued job waiting for a worker"}
PAYLOAD = len(orjson.dumps(INPUT))
CLIENTS = 64
ARQ, CELERY = "arq", "Celery"


async def used_memory(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()


def per_job(before: int, after: int, n: int) -> float:
    return (after - before) / n - PAYLOAD


# ---- podq: the queue ------------------------------------------------------------------------

async def register_endpoint(s: aiohttp.ClientSession, base: str, endpoint: str) -> None:
    """Create the endpoint in the registry (admin API), so its queue takes jobs with no worker."""
    root = base.removesuffix("/v2")
    async with s.post(f"{root}/v1/templates", json={"name": endpoint, "handler": "bench/handlers/noop.py"}) as r:
        if r.status != 200:
            raise RuntimeError(f"POST /v1/templates: {r.status} {await r.text()}")
        template = await r.json()
    body = {"id": endpoint, "name": endpoint, "template_id": template["id"]}
    async with s.post(f"{root}/v1/endpoints", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"POST /v1/endpoints: {r.status} {await r.text()}")


async def podq_queue(s: aiohttp.ClientSession, base: str, redis_url: str, n: int,
                     health_calls: int) -> dict:
    await register_endpoint(s, base, EP)  # a /run to an endpoint nobody serves is a 404
    await submit(s, f"{base}/{EP}/run", INPUT)  # creates the endpoint's keys
    async with s.post(f"{base}/{EP}/purge-queue") as r:
        assert r.status == 200
    before = await used_memory(redis_url)

    async def one() -> None:
        async with s.post(f"{base}/{EP}/run", json={"input": INPUT}) as r:
            if r.status != 200:
                raise RuntimeError(f"/run: {r.status} {await r.text()}")
            await r.read()

    elapsed = await fan_out(n, CLIENTS, one)
    after = await used_memory(redis_url)

    async def health() -> None:
        async with s.get(f"{base}/{EP}/health") as r:
            body = await r.json()
        if body["jobs"]["inQueue"] != n:
            raise RuntimeError(f"/health: {body['jobs']['inQueue']} queued, expected {n}")

    await sequential(health, 10)
    health_ms = await sequential(health, health_calls)
    t0 = time.perf_counter()
    async with s.post(f"{base}/{EP}/purge-queue") as r:
        body = await r.json()
    purge_ms = (time.perf_counter() - t0) * 1000
    if body.get("removed") != n:
        raise RuntimeError(f"/purge-queue removed {body.get('removed')} of {n}")
    return {"rate": n / elapsed, "bytes": per_job(before, after, n),
            "health50": percentile(health_ms, 50), "health99": percentile(health_ms, 99),
            "purge": purge_ms}


# ---- podq: many open streams ----------------------------------------------------------------

async def podq_fanout(base: str, redis_url: str, gateway: subprocess.Popen[bytes], m: int) -> dict:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=AUTH, connector=connector) as s:
        await wait_workers(s, base, FAN, 2)
        ids = [await submit(s, f"{base}/{FAN}/run", {}) for _ in range(m)]
        deadline = time.monotonic() + 30
        while True:  # every job taken and waiting inside its handler
            async with s.get(f"{base}/{FAN}/health") as r:
                jobs = (await r.json())["jobs"]
            if jobs["inProgress"] == m:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {jobs['inProgress']} of {m} jobs running after 30 s")
            await asyncio.sleep(0.05)
        rss_before = psutil.Process(gateway.pid).memory_info().rss

        opened = 0
        all_open = asyncio.Event()
        arrived: list[float] = []
        lag: list[float] = []
        ended: list[bool] = []

        async def client(job_id: str) -> None:
            nonlocal opened
            async with s.get(f"{base}/{FAN}/stream/{job_id}", headers=SSE) as r:
                if r.status != 200:
                    raise RuntimeError(f"SSE {job_id}: {r.status}")
                opened += 1
                if opened == m:
                    all_open.set()
                async for raw in r.content:
                    if raw.startswith(b"data:"):
                        now = time.time()
                        data = orjson.loads(raw[5:])
                        if isinstance(data.get("output"), dict):
                            arrived.append(now)
                            lag.append((now - data["output"]["t"]) * 1000)
                        elif data.get("status") == "COMPLETED":
                            ended.append(True)

        tasks = [asyncio.create_task(client(i)) for i in ids]
        try:
            opening = asyncio.create_task(all_open.wait())
            await asyncio.wait([opening, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if not all_open.is_set():
                opening.cancel()
                failed = [t.exception() for t in tasks if t.done() and t.exception()]
                raise RuntimeError(f"{opened} of {m} SSE streams opened" +
                                   (f": {failed[0]!r}" if failed else " in 60 s"))
            await asyncio.sleep(0.5)  # every pump is parked on its blocking read
            rss_open = psutil.Process(gateway.pid).memory_info().rss
            r = aioredis.Redis.from_url(redis_url)
            try:
                channel = f"bench:go:{FAN}"
                subscribed = dict(await r.pubsub_numsub(channel)).get(channel.encode(), 0)
                if subscribed != 2:
                    raise RuntimeError(f"{subscribed} of 2 workers listen on {channel}")
                t_go = time.time()
                await r.publish(channel, "go")
            finally:
                await r.aclose()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if len(arrived) != m or len(ended) != m:
            raise RuntimeError(f"{len(arrived)} chunks and {len(ended)} final events of {m}")
        after_go = [(t - t_go) * 1000 for t in arrived]
        return {"all": max(after_go), "p50": percentile(after_go, 50),
                "lag50": percentile(lag, 50), "rss_before": rss_before / 2**20,
                "rss_open": rss_open / 2**20}


async def bench_podq(n: int, m: int, health_calls: int) -> dict:
    redis = start_redis()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        procs.append(spawn_gateway(redis.url, port))
        per_worker = {"BENCH_CONCURRENCY": str(m // 2)}
        procs += [spawn_worker(redis.url, "gate.py", FAN, f"{FAN}-{i}", per_worker) for i in range(2)]
        base = f"http://127.0.0.1:{port}/v2"
        await wait_http(f"http://127.0.0.1:{port}/healthz", procs=procs)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(headers=AUTH, connector=connector) as s:
            queue = await podq_queue(s, base, redis.url, n, health_calls)
        fan = await podq_fanout(base, redis.url, procs[0], m)
        return {**queue, **fan}
    finally:
        stop(procs)
        redis.stop()


# ---- peers --------------------------------------------------------------------------------

async def bench_arq(n: int) -> dict:
    from arq.connections import RedisSettings, create_pool

    redis = start_redis()
    try:
        pool = await create_pool(RedisSettings.from_dsn(redis.url))
        try:
            await pool.enqueue_job("work", INPUT)
            await pool.flushdb()
            before = await used_memory(redis.url)
            elapsed = await fan_out(n, CLIENTS, lambda: pool.enqueue_job("work", INPUT))
            after = await used_memory(redis.url)
            queued = await pool.zcard("arq:queue")
            if queued != n:
                raise RuntimeError(f"arq queue holds {queued} of {n}")
        finally:
            await pool.aclose()
        return {"rate": n / elapsed, "bytes": per_job(before, after, n)}
    finally:
        redis.stop()


def celery_queue(url: str, n: int) -> dict:
    from celery import Celery

    app = Celery("bench_scale", broker=url)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)

    @app.task(name="bench.scale.work")
    def work(job_input):  # never runs: no Celery worker is started
        return None

    try:
        work.delay(INPUT)
        app.control.purge()
        import redis as sync_redis

        client = sync_redis.Redis.from_url(url)
        before = int(client.info("memory")["used_memory"])
        t0 = time.perf_counter()
        for _ in range(n):
            work.delay(INPUT)
        elapsed = time.perf_counter() - t0
        after = int(client.info("memory")["used_memory"])
        queued = client.llen("celery")
        if queued != n:
            raise RuntimeError(f"Celery queue holds {queued} of {n}")
        t0 = time.perf_counter()
        removed = app.control.purge()
        purge_ms = (time.perf_counter() - t0) * 1000
        if removed != n:
            raise RuntimeError(f"Celery purge removed {removed} of {n}")
        client.close()
        return {"rate": n / elapsed, "bytes": per_job(before, after, n), "purge": purge_ms}
    finally:
        app.close()


async def bench_celery(n: int) -> dict:
    redis = start_redis()
    try:
        return await asyncio.to_thread(celery_queue, redis.url, n)
    finally:
        redis.stop()


async def run(opts) -> Section:
    n = 20_000 if opts.quick else 100_000
    n_peer = 10_000 if opts.quick else n  # Celery's .delay() alone would take most of --quick
    m = 200 if opts.quick else 1_000
    health_calls = 100 if opts.quick else 300
    podq = await bench_podq(n, m, health_calls)
    notes = []
    peers: dict[str, dict] = {}
    for name, bench in ((ARQ, bench_arq), (CELERY, bench_celery)):
        try:
            peers[name] = await bench(n_peer)
        except Exception as e:  # a peer failing must not cost podq's figures
            peers[name] = {}
            notes.append(f"{name} failed in this run: {e!r}")
    arq, celery = peers[ARQ], peers[CELERY]
    rows = [
        Row(f"submit rate, {n:,} jobs, {CLIENTS} clients (jobs/s)", podq["rate"],
            {ARQ: arq.get("rate"), CELERY: celery.get("rate")}, lower_is_better=False),
        Row(f"GET /health p50 with {n:,} queued (ms)", podq["health50"], target="<= 5 ms",
            met=podq["health50"] <= 5),
        Row(f"GET /health p99 with {n:,} queued (ms)", podq["health99"]),
        Row(f"purge-queue, {n:,} queued (ms)", podq["purge"],
            {CELERY: celery.get("purge")} if n_peer == n else {},
            target="<= 1,000 ms" + ("" if n >= 100_000 else f" at 100,000 (this run: {n:,})"),
            met=podq["purge"] <= 1000),
        Row("Redis bytes per queued job, minus the input", podq["bytes"],
            {ARQ: arq.get("bytes"), CELERY: celery.get("bytes")}, target="<= 600 B",
            met=podq["bytes"] <= 600),
        Row(f"{m:,} open SSE streams: one chunk to every client, publish -> last client (ms)",
            podq["all"]),
        Row(f"{m:,} open SSE streams: publish -> client p50 (ms)", podq["p50"]),
        Row(f"gateway RSS with {m:,} SSE streams open (MB)", podq["rss_open"]),
    ]
    notes += [
        f"podq queue: one `podq gateway` (rate limits off), no worker on the endpoint; {n:,} "
        f"POST /run from {CLIENTS} concurrent aiohttp clients; input {orjson.dumps(INPUT).decode()} "
        f"({PAYLOAD} B, subtracted from every bytes-per-job figure); /health called "
        f"{health_calls} times in a row with the queue full.",
        (f"Peers on the same {n:,} jobs and input" if n_peer == n else
         f"Peers on {n_peer:,} jobs (fewer, to keep --quick short; Celery purged them in "
         f"{celery.get('purge', float('nan')):.1f} ms) and the same input") +
        ", each on its own private redis-server: arq 0.28 "
        f"`enqueue_job` from {CLIENTS} concurrent tasks on one pool (no HTTP); Celery `.delay()` "
        "from one thread on a Redis broker (no HTTP, no result backend). Their submit rates "
        "skip HTTP, podq's include it. arq has no purge API, so no arq purge figure. Celery's "
        "purge is one DEL of the broker list (its queued tasks have no per-task state to end); "
        "podq's ends every queued job CANCELLED (status, counters, retention) in one Lua script.",
        "Bytes per job move with N by tens of bytes for every system: Redis grows its keyspace "
        "table in powers of two, so where N falls against a doubling shows in the figure.",
        f"Streams: {m:,} jobs running on 2 worker processes (bench/handlers/gate.py, {m // 2} "
        f"each), one SSE client each on one gateway; the gateway's RSS was "
        f"{podq['rss_before']:.1f} MB before they opened. The publish -> client time includes "
        f"the workers writing {m:,} chunks; chunk yield -> client p50 was {podq['lag50']:.1f} ms.",
    ]
    description = ("A deep queue on an endpoint with no workers (submit, /health, purge, Redis "
                   "memory per job), then many SSE streams open on one gateway.")
    return Section(title="Scale: deep queue, many streams", description=description, rows=rows,
                   notes=notes)
