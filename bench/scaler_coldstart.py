"""Cold start and scaler reaction, process backend (and docker with --docker).

With --docker the benchmark starts its own dockerd (tests/backends/docker_engine.py) and runs
workers in an image that bind-mounts the host's Python, as the tests do.

    .venv/bin/python -m bench.scaler_coldstart [--runs 10] [--docker]

cold start: an endpoint at zero workers gets one no-op job; time from submit to result (the
scaler notices the job, starts a worker, the worker boots and takes the job). p50 of N, each
after the endpoint scaled back to zero. Peer figure: RunPod FlashBoot's published claim
(563 ms best case, P90 < 2 s); RunPod is a cloud, so it cannot run here.
reaction: QUEUE_DELAY with scaler_value 1 s and one busy worker: time from the moment the
queued job's wait crosses scaler_value to a second worker starting it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import msgspec

from bench.common import ROOT, machine, percentile, start_redis
from scaler.backends.process import ProcessBackend
from scaler.loop import Scaler
from serverless.model import EndpointConfig, RunRequest, Status, Template
from serverless.queue import connect
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore

HANDLER = ROOT / "tests" / "scaler" / "handlers" / "work.py"


def job(seconds: float) -> RunRequest:
    return RunRequest(input=msgspec.Raw(msgspec.json.encode({"seconds": seconds})))


async def until_zero(backend) -> None:
    while [h for h in await backend.list() if h.running]:
        await asyncio.sleep(0.05)


async def cold_starts(store, registry, backend, runs: int, backend_name: str) -> list[float]:
    await registry.put_endpoint(EndpointConfig(id=f"cold-{backend_name}", name="cold", template_id="t",
                                               idle_timeout=1, backend=backend_name))
    samples = []
    for _ in range(runs):
        await until_zero(backend)
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        rec = await store.submit(f"cold-{backend_name}", job(0))
        done = await store.wait(rec.id, 120)
        assert done.status is Status.COMPLETED, done
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def reactions(store, registry, runs: int) -> list[float]:
    await registry.put_endpoint(EndpointConfig(id="react", name="react", template_id="t", idle_timeout=1,
                                               workers_min=1, workers_max=2, scaler_value=1))
    samples = []
    for _ in range(runs):
        while len([w for w in await store.workers("react") if w.state == "idle"]) != 1:
            await asyncio.sleep(0.05)
        busy = await store.submit("react", job(4))
        while (await store.get(busy.id)).status is not Status.IN_PROGRESS:
            await asyncio.sleep(0.01)
        waiting = await store.submit("react", job(0))
        done = await store.wait(waiting.id, 60)
        samples.append(done.started_at - (done.submitted_at + 1000))
        await store.wait(busy.id, 60)
    return samples


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--docker", action="store_true", help="also the docker backend (needs dockerd)")
    args = p.parse_args()
    redis = start_redis()
    settings = Settings(redis_url=redis.url, heartbeat_ms=500)
    store = JobStore(await connect(redis.url), settings)
    registry = Registry(store.redis)
    await registry.put_template(Template(id="t", name="t", handler=str(HANDLER)))
    backends = {"process": ProcessBackend(redis.url)}
    engine = None
    if args.docker:  # a private dockerd, started the way the test suite starts it
        from scaler.backends.docker import DockerBackend
        from tests.backends.docker_engine import start_engine

        engine = start_engine()
        backends["docker"] = DockerBackend(engine.options())
    scaler = Scaler(registry, store, backends, settings, tick_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(scaler.run(stop))
    try:
        rows = {name: await cold_starts(store, registry, b, args.runs, name) for name, b in backends.items()}
        react = await reactions(store, registry, max(3, args.runs // 2))
    finally:
        stop.set()
        await task
        for b in backends.values():
            for h in await b.list():
                await b.stop(h, 1)
            await b.close()
        await store.close()
        redis.stop()
        if engine is not None:
            from tests.backends.docker_engine import stop_engine

            stop_engine(engine)
    print(f"\nCold start and scaler reaction ({args.runs} runs)\nmachine: {machine()}\n")
    print("| metric | podq p50 | podq p90 | RunPod FlashBoot (published) |\n|---|---:|---:|---|")
    for name, samples in rows.items():
        print(f"| cold start, {name} backend (ms) | {percentile(samples, 50):,.0f} | "
              f"{percentile(samples, 90):,.0f} | 563 best, P90 < 2,000 |")
    print(f"| reaction past scaler_value (ms) | {percentile(react, 50):,.0f} | {percentile(react, 90):,.0f} | n/a |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
