"""Scenario: a batch of no-op inputs through `podq gateway` + real worker processes.

    .venv/bin/python -m bench.run --only batch            # 100,000 inputs
    PODQ_BENCH_BATCH=5000 .venv/bin/python -m bench.run --only batch   # a smaller run

1. The batch (POST /v1/batches, JSONL upload, max_in_flight 512) through 4 worker processes
   (bench/handlers/noop.py): wall time from the upload to COMPLETED, inputs/s, Redis peak
   used_memory (INFO memory sampled every 20 ms) above the idle baseline.
2. Bytes per in-flight input: a batch on a paused endpoint (nobody takes its jobs) with
   max_in_flight 5,000; (used_memory once 5,000 are in flight - before) / 5,000.
3. The same batch with the gateway SIGKILLed at 40% and a new one started: the same figures,
   and every index exactly once in the results, and the endpoint's completed count grown by
   exactly the batch size (no input ran twice to completion).
Peer (same run, same workers): the same inputs pushed by a client through POST /run with 64
requests in flight (enqueue-all: each job's record stays for the /run result retention).
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from typing import Any

import aiohttp
import msgspec
from redis.asyncio import Redis

from bench.common import fan_out, wait_http
from bench.peers.base import PY, Procs
from bench.report import Row, Section
from serverless.model import EndpointConfig, Template
from serverless.redis_server import RedisProcess, free_port
from serverless.registry import Registry

KEY = "bench-key"
EP, PAUSED = "bench", "bench-paused"
WORKERS = 4
IN_FLIGHT_PROBE = 5_000


def count(quick: bool) -> int:
    return int(os.environ.get("PODQ_BENCH_BATCH", "10000" if quick else "100000"))


class Sampler:
    """Redis used_memory, sampled until stopped: the peak."""

    def __init__(self, redis: Redis) -> None:
        self.redis, self.peak, self._task = redis, 0, None

    async def used(self) -> int:
        return int((await self.redis.info("memory"))["used_memory"])

    async def __aenter__(self) -> Sampler:
        async def loop() -> None:
            while True:
                self.peak = max(self.peak, await self.used())
                await asyncio.sleep(0.02)

        self._task = asyncio.create_task(loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class Bench:
    def __init__(self, redis: RedisProcess, data_dir: str) -> None:
        self.env = {"PODQ_REDIS_URL": redis.url, "PODQ_API_KEY": KEY, "PODQ_RATE_LIMITS": "false",
                    "PODQ_DATA_DIR": data_dir}
        self.procs = Procs()
        self.gateway_proc: Any = None

    async def start_gateway(self) -> None:
        port = free_port()
        self.gateway_proc = self.procs.spawn([PY, "-m", "serverless.cli", "gateway", "--port", str(port)], self.env)
        self.url = f"http://127.0.0.1:{port}"
        await wait_http(f"{self.url}/healthz", [self.gateway_proc])

    def kill_gateway(self) -> None:
        self.gateway_proc.send_signal(signal.SIGKILL)
        self.gateway_proc.wait()

    async def call(self, http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> Any:
        async with http.request(method, self.url + path, **kw) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {r.status} {body[:300]!r}")
            return msgspec.json.decode(body) if r.content_type == "application/json" else body


def inputs(n: int) -> bytes:
    return b"".join(b'{"i":%d}\n' % i for i in range(n))


async def until(bench: Bench, http: aiohttp.ClientSession, batch_id: str, done, poll: float = 0.1) -> dict:  # type: ignore[no-untyped-def]
    while True:
        try:
            batch = await bench.call(http, "GET", f"/v1/batches/{batch_id}")
            if done(batch):
                return batch
        except (aiohttp.ClientError, RuntimeError):
            pass  # the gateway is restarting
        await asyncio.sleep(poll)


async def completed(bench: Bench, http: aiohttp.ClientSession) -> int:
    return (await bench.call(http, "GET", f"/v2/{EP}/health"))["jobs"]["completed"]


async def run_batch(bench: Bench, http: aiohttp.ClientSession, redis: Redis, n: int, kill_at: float | None) -> dict:
    before = await completed(bench, http)
    base = await Sampler(redis).used()
    async with Sampler(redis) as sampler:
        t0 = time.perf_counter()
        batch = await bench.call(http, "POST", f"/v1/batches?endpoint_id={EP}", data=inputs(n))
        if kill_at is not None:
            await until(bench, http, batch["id"], lambda b: b["counts"]["completed"] >= kill_at * n, 0.02)
            bench.kill_gateway()
            await bench.start_gateway()
        done = await until(bench, http, batch["id"], lambda b: b["state"] == "COMPLETED", 0.02)
        wall = time.perf_counter() - t0
    lines = (await bench.call(http, "GET", f"/v1/batches/{batch['id']}/results")).splitlines()
    indices = [msgspec.json.decode(x)["index"] for x in lines]
    grown = await completed(bench, http) - before
    await bench.call(http, "DELETE", f"/v1/batches/{batch['id']}")
    return {"wall": wall, "rate": n / wall, "peak_mb": (sampler.peak - base) / 1e6,
            "exact": indices == list(range(n)) and grown == n and done["counts"]["completed"] == n}


async def per_in_flight(bench: Bench, http: aiohttp.ClientSession, redis: Redis) -> float:
    registry = Registry(redis)
    await registry.put_template(Template(id="t-paused", name="paused", handler="noop.py"))
    await registry.put_endpoint(EndpointConfig(id=PAUSED, name=PAUSED, template_id="t-paused", paused=True))
    base = await Sampler(redis).used()
    batch = await bench.call(http, "POST", f"/v1/batches?endpoint_id={PAUSED}&max_in_flight={IN_FLIGHT_PROBE}",
                             data=inputs(IN_FLIGHT_PROBE * 2))
    await until(bench, http, batch["id"], lambda b: b["counts"]["in_flight"] >= IN_FLIGHT_PROBE)
    used = await Sampler(redis).used()
    await bench.call(http, "POST", f"/v1/batches/{batch['id']}/cancel")
    await until(bench, http, batch["id"], lambda b: b["state"] == "CANCELLED")
    await bench.call(http, "DELETE", f"/v1/batches/{batch['id']}")
    return (used - base) / IN_FLIGHT_PROBE


async def enqueue_all(bench: Bench, http: aiohttp.ClientSession, redis: Redis, n: int) -> dict:
    before = await completed(bench, http)
    base = await Sampler(redis).used()

    async def one() -> None:
        await bench.call(http, "POST", f"/v2/{EP}/run", json={"input": {"i": 0}})

    async with Sampler(redis) as sampler:
        t0 = time.perf_counter()
        await fan_out(n, 64, one)
        while await completed(bench, http) - before < n:
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - t0
    return {"wall": wall, "rate": n / wall, "peak_mb": (sampler.peak - base) / 1e6}


async def run(opts) -> Section:  # type: ignore[no-untyped-def]
    n = count(opts.quick)
    redis_proc = RedisProcess().start()
    data_dir = tempfile.mkdtemp(prefix="podq-bench-batch-")
    bench = Bench(redis_proc, data_dir)
    redis = Redis.from_url(redis_proc.url)
    try:
        await bench.start_gateway()
        for i in range(WORKERS):
            bench.procs.spawn([PY, "-m", "worker", "bench/handlers/noop.py", "--endpoint", EP,
                               "--worker-id", f"{EP}-{i}"], bench.env)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"},
                                         connector=aiohttp.TCPConnector(limit=0)) as http:
            while True:  # the workers registered (the endpoint is known through them)
                try:
                    workers = (await bench.call(http, "GET", f"/v2/{EP}/health"))["workers"]
                    if workers.get("idle", 0) + workers.get("running", 0) >= WORKERS:
                        break
                except RuntimeError:
                    pass
                bench.procs.check_alive()
                await asyncio.sleep(0.1)
            plain = await run_batch(bench, http, redis, n, None)
            killed = await run_batch(bench, http, redis, n, 0.4)
            per_input = await per_in_flight(bench, http, redis)
            peer = await enqueue_all(bench, http, redis, n)
    finally:
        bench.procs.stop()
        await redis.aclose()
        redis_proc.stop()
    rows = [
        Row(f"batch of {n:,}: wall (s)", plain["wall"], {"POST /run enqueue-all": peer["wall"]}),
        Row(f"batch of {n:,}: inputs/s", plain["rate"], {"POST /run enqueue-all": peer["rate"]}, lower_is_better=False),
        Row(f"batch of {n:,}: Redis peak above idle (MB)", plain["peak_mb"], {"POST /run enqueue-all": peer["peak_mb"]}),
        Row("Redis bytes per in-flight input", per_input),
        Row(f"batch of {n:,}, gateway SIGKILLed at 40%: wall (s)", killed["wall"]),
        Row(f"batch of {n:,}, gateway SIGKILLed at 40%: inputs/s", killed["rate"], lower_is_better=False),
        Row(f"batch of {n:,}, gateway SIGKILLed at 40%: Redis peak above idle (MB)", killed["peak_mb"]),
    ]
    notes = [f"every index exactly once, no input completed twice: plain {plain['exact']}, "
             f"after SIGKILL {killed['exact']}",
             "the SIGKILL run includes the new gateway's start and the lease takeover (up to 10 s)"]
    if not (plain["exact"] and killed["exact"]):
        notes.append("**FAILED: an index is missing or repeated, or an input completed twice**")
    return Section(title="Batch jobs (/v1/batches)", description=__doc__.split("\n\n", 1)[1], rows=rows,
                   notes=notes)
