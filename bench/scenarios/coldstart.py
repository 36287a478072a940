"""Scenario 5: cold start and scaler reaction (process backend; Docker too with --docker).

cold start: an endpoint at zero workers gets one no-op job; the time from submit to result (the
scaler notices the job, starts a worker, the worker boots and takes the job), each run after the
endpoint scaled back to zero. The peers' figure in the same run is the same wait with a freshly
spawned process of theirs: a Celery worker (`celery worker -c 1`, the job sent as it starts) and
RunPod's dev server (`--rp_serve_api`, /runsync retried until it answers). RunPod's cloud
FlashBoot (published: 563 ms best case, P90 < 2 s) cannot run here and is quoted in a note.
reaction: QUEUE_DELAY with scaler_value 1 s and one busy worker: from the moment the queued
job's wait crosses scaler_value to a second worker starting it.
With --docker the scenario starts its own dockerd (tests/backends/docker_engine.py) and runs
workers in an image that bind-mounts the host's Python, as the tests do.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

import aiohttp
import msgspec

from bench.common import ROOT, percentile, spawn, start_redis, stop
from bench.report import Chart, Row, Section
from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless.model import EndpointConfig, RunRequest, Status, Template
from serverless.queue import connect
from serverless.redis_server import free_port
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore

HANDLER = ROOT / "tests" / "scaler" / "handlers" / "work.py"
TARGET_MS = 1000


def job(seconds: float) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode({"seconds": seconds})))


async def _until_zero(backend) -> None:
    while [h for h in await backend.list() if h.running]:
        await asyncio.sleep(0.05)


async def podq_cold_starts(store: JobStore, registry: Registry, backend, runs: int, name: str) -> list[float]:
    endpoint = f"cold-{name}"
    await registry.put_endpoint(EndpointConfig(id=endpoint, name="cold", template_id="t",
                                               idle_timeout=1, backend=name))
    samples = []
    for _ in range(runs):
        await _until_zero(backend)
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        rec = await store.submit(endpoint, job(0))
        done = await store.wait(rec.id, 120)
        assert done.status is Status.COMPLETED, done
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def reactions(store: JobStore, registry: Registry, runs: int) -> list[float]:
    await registry.put_endpoint(EndpointConfig(id="react", name="react", template_id="t", idle_timeout=1,
                                               workers_min=1, workers_max=2, scaler_value=1))
    samples = []
    for _ in range(runs):
        while len([w for w in await store.workers("react") if w.state == "idle"]) != 1:
            await asyncio.sleep(0.05)
        busy = await store.submit("react", job(3))
        while (await store.get(busy.id)).status is not Status.IN_PROGRESS:
            await asyncio.sleep(0.01)
        waiting = await store.submit("react", job(0))
        done = await store.wait(waiting.id, 60)
        samples.append(done.started_at - (done.submitted_at + 1000))
        await store.wait(busy.id, 60)
    return samples


async def runpod_cold_starts(runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        port = free_port()
        t0 = time.perf_counter()
        proc = spawn([sys.executable, "bench/handlers/runpod_noop.py", "--rp_serve_api",
                      "--rp_api_port", str(port), "--rp_log_level", "ERROR"])
        try:
            async with aiohttp.ClientSession() as s:
                while True:
                    try:
                        async with s.post(f"http://localhost:{port}/runsync", json={"input": {}}) as r:
                            if (await r.json()).get("status") == "COMPLETED":
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.01)
            samples.append((time.perf_counter() - t0) * 1000)
        finally:
            stop([proc])
    return samples


async def celery_cold_starts(redis_url: str, runs: int) -> list[float]:
    os.environ["BENCH_REDIS_URL"] = redis_url
    from bench.handlers.celery_noop import noop

    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = spawn([sys.executable, "-m", "celery", "-A", "bench.handlers.celery_noop", "worker",
                      "-c", "1", "--loglevel", "ERROR"], {"BENCH_REDIS_URL": redis_url})
        try:
            await asyncio.to_thread(lambda: noop.delay().get(timeout=60))
            samples.append((time.perf_counter() - t0) * 1000)
        finally:
            stop([proc])
    gc.collect()  # Celery's results talk to Redis when collected: let that happen while it runs
    return samples


async def run(opts) -> Section:  # noqa: ANN001 (bench.run.Options)
    runs = 3 if opts.quick else 10
    peer_runs = 2 if opts.quick else 5
    redis = start_redis()
    settings = Settings(redis_url=redis.url, heartbeat_ms=500)
    store = JobStore(await connect(redis.url), settings)
    registry = Registry(store.redis)
    await registry.put_template(Template(id="t", name="t", handler=str(HANDLER)))
    backends = {"process": ProcessBackend(redis.url)}
    engine = None
    notes = ["RunPod's cloud FlashBoot cannot run here; its published figure: 563 ms best case, P90 < 2 s."]
    if opts.docker:
        from scaler.backends.docker import DockerBackend
        from tests.backends.docker_engine import start_engine

        engine = start_engine()
        backends["docker"] = DockerBackend(engine.options())
    scaler = Scaler(registry, store, backends, settings, tick_s=0.1)
    halt = asyncio.Event()
    task = asyncio.create_task(scaler.run(halt))
    try:
        ours = {name: await podq_cold_starts(store, registry, b, runs, name) for name, b in backends.items()}
        react = await reactions(store, registry, 1 if opts.quick else 5)
    finally:
        halt.set()
        await task
        await scaler.close()
        for b in backends.values():
            for h in await b.list():
                await b.stop(h, 1)
            await b.close()
        await store.close()
        if engine is not None:
            from tests.backends.docker_engine import stop_engine

            stop_engine(engine)
    peers: dict[str, list[float]] = {}
    try:
        peers["RunPod dev server"] = await runpod_cold_starts(peer_runs)
    except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        notes.append(f"RunPod dev server cold start failed: {e!r}")
    try:
        peers["Celery worker"] = await celery_cold_starts(redis.url, peer_runs)
    except ImportError:
        notes.append("Celery is not installed (`pip install -e '.[bench]'`): no Celery figure.")
    finally:
        redis.stop()

    def p(samples: list[float] | None, pct: int) -> float | None:
        return percentile(samples, pct) if samples else None

    rows = []
    for name, samples in ours.items():
        for pct in (50, 90):
            value = percentile(samples, pct)
            rows.append(Row(f"cold start, {name} backend, p{pct} (ms)", value,
                            {peer: p(s, pct) for peer, s in peers.items()},
                            target=f"<= {TARGET_MS} ms" if name == "process" and pct == 50 else "",
                            met=(value <= TARGET_MS) if name == "process" and pct == 50 else None))
    rows.append(Row("scaler reaction past scaler_value, p50 (ms)", percentile(react, 50)))
    if not opts.docker:
        notes.append("Docker backend not measured in this run (add --docker; it starts a private dockerd).")
    return Section(
        title="Cold start and scaler reaction",
        description=(f"{runs} cold starts per backend: an endpoint at zero workers gets one no-op job; "
                     "time from submit to result, including the scaler's 0.1 s tick, the worker's boot "
                     "and the job. Peers ({peer_runs} runs each): a freshly spawned Celery worker (-c 1) "
                     "and RunPod's dev server, from spawn to the first job's result. Reaction: a second worker starting "
                     f"a job queued behind a busy one, after its wait crossed scaler_value (1 s); {len(react)} runs."),
        rows=rows,
        charts=[Chart("coldstart", "Cold start: submit to result, fresh worker", "cdf",
                      {**{f"podq ({n})": s for n, s in ours.items()}, **peers}, xlabel="ms")],
        notes=notes,
    )
