"""Through HTTP: podq's gateway + workers vs RunPod's local dev server and Celery (Redis broker).

    .venv/bin/python -m bench.http_roundtrip [--quick]

1. run_sync latency, 200 sequential no-op calls over one keep-alive connection: p50/p99.
   podq: POST /v2/{ep}/runsync. RunPod: POST /runsync on `handler.py --rp_serve_api` (in-process,
   no queue). Celery: `noop.delay().get()` (the queue round trip without HTTP).
2. Throughput, 20,000 no-op jobs, 64 concurrent clients: podq /run + completion (until nothing is
   queued or running), RunPod /runsync (its /run does not execute jobs), Celery delay + get.
3. Streaming: time from a yield in the handler to the chunk at an SSE client, p50/p99.
podq runs 2 worker processes (10 jobs each); Celery 2 prefork processes; RunPod one process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time

import aiohttp

from bench.common import ROOT, fan_out, machine, percentile, sequential, spawn, start_redis, stop
from serverless.redis_server import free_port

KEY = "bench-key"
EP = "bench"


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# ---- podq -------------------------------------------------------------------------------

async def bench_podq(redis_url: str, seq: int, total: int) -> dict[str, float]:
    port = free_port()
    env = {"PODQ_REDIS_URL": redis_url, "PODQ_API_KEY": KEY, "PODQ_RATE_LIMITS": "false"}
    procs = [spawn([sys.executable, "-m", "serverless.cli", "gateway", "--port", str(port)], env)]
    procs += [spawn([sys.executable, "-m", "worker", f"bench/handlers/{h}", "--endpoint", ep,
                     "--worker-id", f"{ep}-{i}"], env)
              for h, ep in (("noop.py", EP), ("stamp.py", "stamp")) for i in range(2)]
    base = f"http://127.0.0.1:{port}/v2"
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as s:
            async def runsync() -> None:
                async with s.post(f"{base}/{EP}/runsync", json={"input": {}}) as r:
                    assert (await r.json())["status"] == "COMPLETED"

            async def run() -> None:
                async with s.post(f"{base}/{EP}/run", json={"input": {}}) as r:
                    assert r.status == 200

            await sequential(runsync, 50)  # warm-up
            lat = await sequential(runsync, seq)
            t0 = time.perf_counter()
            await fan_out(total, 64, run)
            while True:
                async with s.get(f"{base}/{EP}/health") as r:
                    jobs = (await r.json())["jobs"]
                if jobs["inQueue"] == 0 and jobs["inProgress"] == 0:
                    break
                await asyncio.sleep(0.005)
            rate = total / (time.perf_counter() - t0)
            sse = await sse_latency(s, base)
    finally:
        stop(procs)
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "rate": rate,
            "sse50": percentile(sse, 50), "sse99": percentile(sse, 99)}


async def sse_latency(s: aiohttp.ClientSession, base: str) -> list[float]:
    async with s.post(f"{base}/stamp/run", json={"input": {"n": 200, "gap": 0.005}}) as r:
        job_id = (await r.json())["id"]
    samples = []
    async with s.get(f"{base}/stamp/stream/{job_id}", headers={"Accept": "text/event-stream"}) as r:
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                data = json.loads(line[5:])
                if isinstance(data, dict) and isinstance(data.get("output"), dict):
                    samples.append((time.time() - data["output"]["t"]) * 1000)
    return samples


# ---- RunPod's dev server ----------------------------------------------------------------

async def bench_runpod(seq: int, total: int) -> dict[str, float]:
    port = free_port()
    procs = [spawn([sys.executable, "bench/handlers/runpod_noop.py", "--rp_serve_api",
                    "--rp_api_port", str(port), "--rp_log_level", "ERROR"])]
    url = f"http://localhost:{port}/runsync"
    try:
        await wait_http(f"http://localhost:{port}/")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            async def runsync() -> None:
                async with s.post(url, json={"input": {}}) as r:
                    assert (await r.json())["status"] == "COMPLETED"

            await sequential(runsync, 50)
            lat = await sequential(runsync, seq)
            elapsed = await fan_out(total, 64, runsync)
    finally:
        stop(procs)
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "rate": total / elapsed}


# ---- Celery -----------------------------------------------------------------------------

async def bench_celery(redis_url: str, seq: int, total: int) -> dict[str, float]:
    env = {"BENCH_REDIS_URL": redis_url}
    os.environ["BENCH_REDIS_URL"] = redis_url
    procs = [spawn([sys.executable, "-m", "celery", "-A", "bench.handlers.celery_noop", "worker",
                    "-c", "2", "--loglevel", "ERROR"], env)]
    from bench.handlers.celery_noop import noop

    def roundtrip() -> None:
        noop.delay().get(timeout=30)

    try:
        await asyncio.to_thread(lambda: noop.delay().get(timeout=60))  # waits for the worker
        lat = await sequential(lambda: asyncio.to_thread(roundtrip), seq)
        def batch() -> None:
            results = [noop.delay() for _ in range(total)]
            for r in results:
                r.get(timeout=120)
            results.clear()  # release the results while Redis still runs

        t0 = time.perf_counter()
        await asyncio.to_thread(batch)
        rate = total / (time.perf_counter() - t0)
        gc.collect()  # Celery results poll Redis when collected: do it while Redis runs
    finally:
        stop(procs)
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "rate": rate}


def report(podq: dict, runpod: dict, celery: dict, seq: int, total: int) -> str:
    def row(name: str, key: str, lower: bool) -> str:
        ours = podq[key]
        cells = [f"{ours:,.2f}"]
        for peer in (runpod, celery):
            theirs = peer.get(key)
            if theirs is None:
                cells += ["n/a", "n/a"]
                continue
            ratio = theirs / ours if lower else ours / theirs
            cells += [f"{theirs:,.2f}", f"{ratio:.2f}x"]
        return f"| {name} | " + " | ".join(cells) + " |"

    head = ("| metric | podq | RunPod dev server | podq advantage | Celery (Redis) | podq advantage |\n"
            "|---|---:|---:|---:|---:|---:|")
    rows = [row("run_sync p50 (ms)", "p50", True), row("run_sync p99 (ms)", "p99", True),
            row(f"throughput, {total:,} jobs, 64 clients (jobs/s)", "rate", False)]
    sse = f"\nSSE yield -> client: p50 {podq['sse50']:.2f} ms, p99 {podq['sse99']:.2f} ms (podq only)"
    return f"{head}\n" + "\n".join(rows) + sse


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100 sequential calls, 5,000 jobs")
    args = p.parse_args()
    seq, total = (100, 5_000) if args.quick else (200, 20_000)
    redis = start_redis()
    try:
        podq = await bench_podq(redis.url, seq, total)
        runpod = await bench_runpod(seq, total)
        celery = await bench_celery(redis.url, seq, total)
    finally:
        redis.stop()
    print(f"\nThrough HTTP ({seq} sequential run_sync; {total:,} jobs by 64 clients)")
    print(f"machine: {machine()}\n")
    print(report(podq, runpod, celery, seq, total))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
