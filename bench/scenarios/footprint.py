"""Footprint: idle memory of podq's processes and of the peers, after start-up and a few jobs.

podq: `podq gateway`, one `podq worker` on the no-op handler (bench/handlers/noop.py) and
`podq scaler --backends process` (no endpoint registered, so it reconciles nothing). Peers:
RunPod's dev server (`--rp_serve_api`, gateway and handler in one process), a Celery worker
(prefork, 1 child; parent + child counted) and an arq worker, on the same private redis-server.
Each process tree is measured with psutil: RSS, and USS (pages only that process holds).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import subprocess
import sys
import time

import aiohttp
import psutil

from bench.common import spawn, start_redis, stop
from bench.report import Row, Section
from bench.common import wait_http
from bench.scenarios.streaming import AUTH, podq_env, spawn_gateway, spawn_worker, wait_workers
from serverless.redis_server import free_port

EP = "footprint"
JOBS = 20  # jobs each server runs before it is measured
RUNPOD, CELERY, ARQ = "RunPod dev server", "Celery worker (prefork, 1 child)", "arq worker"
MB = 2**20


def tree_memory(proc: subprocess.Popen[bytes]) -> tuple[float, float, int]:
    """(RSS MB, USS MB, processes) of a process and all its descendants."""
    root = psutil.Process(proc.pid)
    rss = uss = 0
    members = [root, *root.children(recursive=True)]
    for p in members:
        info = p.memory_full_info()
        rss += info.rss
        uss += info.uss
    return rss / MB, uss / MB, len(members)


async def podq_jobs(port: int, procs: list[subprocess.Popen[bytes]]) -> None:
    await wait_http(f"http://127.0.0.1:{port}/healthz", procs=procs)
    base = f"http://127.0.0.1:{port}/v2"
    async with aiohttp.ClientSession(headers=AUTH) as s:
        await wait_workers(s, base, EP, 1)
        for _ in range(JOBS):
            async with s.post(f"{base}/{EP}/runsync", json={"input": {}}) as r:
                body = await r.json()
                if body.get("status") != "COMPLETED":
                    raise RuntimeError(f"podq runsync: {body}")
            async with s.get(f"{base}/{EP}/health") as r:
                await r.read()


async def runpod_jobs(port: int, procs: list[subprocess.Popen[bytes]]) -> None:
    await wait_http(f"http://localhost:{port}/", procs=procs)
    async with aiohttp.ClientSession() as s:
        for _ in range(JOBS):
            async with s.post(f"http://localhost:{port}/runsync", json={"input": {}}) as r:
                body = await r.json()
                if body.get("status") != "COMPLETED":
                    raise RuntimeError(f"RunPod runsync: {body}")


def celery_jobs(url: str) -> None:
    from celery import Celery

    app = Celery("bench_footprint", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    broker_connection_retry_on_startup=True)
    try:
        name = "bench.handlers.celery_noop.noop"
        app.send_task(name).get(timeout=60)  # waits for the worker to come up
        for _ in range(JOBS):
            app.send_task(name).get(timeout=30)
    finally:
        gc.collect()  # Celery results unsubscribe when collected: do it while Redis runs
        app.close()


async def arq_jobs(url: str) -> None:
    from arq.connections import RedisSettings, create_pool

    pool = await create_pool(RedisSettings.from_dsn(url))
    try:
        jobs = [await pool.enqueue_job("noop") for _ in range(JOBS)]
        for job in jobs:  # arq polls every 0.5 s: wait for them together
            await job.result(timeout=60, poll_delay=0.1)
    finally:
        await pool.aclose()


async def run(opts) -> Section:
    redis = start_redis()
    peer_env = {"BENCH_REDIS_URL": redis.url}
    gw_port, rp_port = free_port(), free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    have = {name: importlib.util.find_spec(mod) is not None
            for name, mod in ((RUNPOD, "runpod"), (CELERY, "celery"))}
    try:
        procs["gateway"] = spawn_gateway(redis.url, gw_port)
        procs["worker"] = spawn_worker(redis.url, "noop.py", EP, f"{EP}-0")
        procs["scaler"] = spawn([sys.executable, "-m", "serverless.cli", "scaler",
                                 "--backends", "process", "--tick", "1"], podq_env(redis.url))
        if have[RUNPOD]:
            procs[RUNPOD] = spawn([sys.executable, "bench/handlers/runpod_noop.py", "--rp_serve_api",
                                   "--rp_api_port", str(rp_port), "--rp_log_level", "ERROR"])
        if have[CELERY]:
            procs[CELERY] = spawn([sys.executable, "-m", "celery", "-A",
                                   "bench.handlers.celery_noop", "worker", "--pool", "prefork",
                                   "-c", "1", "--loglevel", "ERROR"], peer_env)
        procs[ARQ] = spawn([sys.executable, "-m", "arq", "bench.handlers.arq_noop.WorkerSettings"],
                           peer_env)
        started = time.perf_counter()
        jobs = [podq_jobs(gw_port, [procs["gateway"], procs["worker"]]), arq_jobs(redis.url)]
        if have[RUNPOD]:
            jobs.append(runpod_jobs(rp_port, [procs[RUNPOD]]))
        if have[CELERY]:
            jobs.append(asyncio.to_thread(celery_jobs, redis.url))
        await asyncio.wait_for(asyncio.gather(*jobs), 120)
        ready_s = time.perf_counter() - started
        await asyncio.sleep(1.0)  # settle: the last replies sent, the scaler through a tick
        for name, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}")
        mem = {name: tree_memory(p) for name, p in procs.items()}
    finally:
        stop(list(procs.values()))
        redis.stop()

    gw_rss, gw_uss, _ = mem["gateway"]
    wk_rss, wk_uss, wk_n = mem["worker"]
    sc_rss, sc_uss, _ = mem["scaler"]
    nothing = (None, None, 0)
    rp_rss, rp_uss, rp_n = mem.get(RUNPOD, nothing)
    cy_rss, cy_uss, cy_n = mem.get(CELERY, nothing)
    aq_rss, aq_uss, _ = mem[ARQ]
    rows = [
        Row("gateway RSS (MB)", gw_rss, target="<= 60 MB", met=gw_rss <= 60),
        Row("gateway USS (MB)", gw_uss),
        Row("worker runtime, no-op handler, RSS (MB)", wk_rss, {CELERY: cy_rss, ARQ: aq_rss},
            target="<= 50 MB", met=wk_rss <= 50),
        Row("worker runtime, no-op handler, USS (MB)", wk_uss, {CELERY: cy_uss, ARQ: aq_uss}),
        Row("scaler RSS (MB)", sc_rss),
        Row("scaler USS (MB)", sc_uss),
        Row("gateway + 1 worker RSS (MB)", gw_rss + wk_rss, {RUNPOD: rp_rss}),
        Row("gateway + 1 worker USS (MB)", gw_uss + wk_uss, {RUNPOD: rp_uss}),
    ]
    notes = [
        f"Each server ran {JOBS} no-op jobs (podq: POST /runsync through the gateway; RunPod: "
        f"POST /runsync; Celery: `send_task().get()`; arq: `enqueue_job` + `result()`), then "
        f"sat idle 1 s before being measured; all were up and through their jobs {ready_s:.1f} s "
        f"after being started together.",
        f"Process trees: podq worker {wk_n} process(es); Celery {cy_n} (parent + prefork child; "
        f"RSS counts shared pages twice, USS does not); RunPod dev server {rp_n}.",
        "RunPod's dev server is a gateway and a worker in one process with no queue, so it "
        "stands against podq's gateway + one worker.",
    ] + [f"{name} skipped: its package is not installed (`pip install -e '.[bench]'`)."
         for name, ok in have.items() if not ok]
    description = ("Idle memory after start-up and a few jobs: podq's gateway, one worker "
                   "runtime (bench/handlers/noop.py) and the scaler (process backend, tick 1 s), "
                   "vs RunPod's dev server (bench/handlers/runpod_noop.py), a Celery 5.5 worker "
                   "(bench/handlers/celery_noop.py) and an arq 0.28 worker "
                   "(bench/handlers/arq_noop.py), all on one private redis-server; psutil "
                   "memory_full_info() over each process tree.")
    return Section(title="Footprint", description=description, rows=rows, notes=notes)
