"""podq serving unmodified RunPod SDK workers: `podq gateway` (rate limits off) + N processes
running a handler file that only calls `runpod.serverless.start` (runpod 1.12 from `.venv`),
pointed at the gateway's RunPod worker routes (job-take, job-done, ping, job-stop) by the
environment `serverless.runpod_protocol.worker_env` builds; on its own redis-server.

Clients are PodqHttp's (POST /runsync for latency; /run + /health's `completed` count for
throughput): only the worker side differs. Two variants:
- concurrency 1 (bench/handlers/runpod_noop.py, the same file the RunPod dev server peer runs):
  the SDK's take loop sleeps 1 s whenever the worker is full, so one such worker takes at most
  about one job per second;
- concurrency 8 (bench/handlers/runpod_concurrent_noop.py, `concurrency_modifier` -> 8): it
  keeps a take open while it has a free slot and takes up to 8 at once with job-take-batch.

Each SDK worker runs in its own session with a fresh HOME and working directory; Procs.stop ends
its whole process group (the SDK's ping child outlives its parent otherwise)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import ROOT, wait_http
from bench.peers.base import PY
from bench.peers.podq_http import EP, KEY, PodqHttp
from serverless.redis_server import free_port
from serverless.runpod_protocol import worker_env

PING_MS = 1000  # RUNPOD_PING_INTERVAL: the shortest the SDK accepts (whole seconds)
HOLD_MS = 1000  # an empty job-take is answered 204 after this (short: workers stop quickly)


class PodqRunpodWorker(PodqHttp):
    name = "RunPod worker c=1 on podq"
    handler = "bench/handlers/runpod_noop.py"
    concurrency = 1

    async def start(self) -> None:
        port = free_port()
        gateway = f"http://127.0.0.1:{port}"
        env = {"PODQ_REDIS_URL": self.url, "PODQ_API_KEY": KEY, "PODQ_RATE_LIMITS": "false",
               "PODQ_RUNPOD_PING_MS": str(PING_MS), "PODQ_RUNPOD_HOLD_MS": str(HOLD_MS)}
        self.procs.spawn([PY, "-m", "serverless.cli", "gateway", "--port", str(port)], env)
        for i in range(self.workers):
            home, cwd = self.procs.logdir / f"home-{i}", self.procs.logdir / f"cwd-{i}"
            home.mkdir()
            cwd.mkdir()
            sdk = worker_env(gateway, EP, f"{EP}-rp-{i}", KEY, ping_ms=PING_MS,
                             template_env={"RUNPOD_LOG_LEVEL": "ERROR"})
            self.procs.spawn([PY, "-u", str(ROOT / self.handler)],
                             {**sdk, "HOME": str(home), "RUNPOD_SKIP_GPU_CHECK": "true"}, cwd=cwd)
        self.base = f"{gateway}/v2/{EP}"
        await wait_http(f"{gateway}/healthz", self.procs.procs)
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"},
                                             connector=aiohttp.TCPConnector(limit=0))

    async def ready(self, timeout: float = 60) -> None:
        """Until every SDK worker has pinged (it counts in /health), then one job per worker
        slot: PodqHttp's 20 jobs per worker would take 20 s per concurrency-1 worker."""
        deadline = time.monotonic() + timeout
        while True:
            # 404 until the first ping: an endpoint nobody registered exists once a worker lives
            workers = (await self.health()).get("workers")
            if workers and workers["idle"] + workers["running"] >= self.workers:
                break
            self.procs.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {self.workers} workers not ready in {timeout:.0f} s")
            await asyncio.sleep(0.05)
        await self.throughput(self.workers * self.concurrency, 16)


class PodqRunpodWorkerConcurrent(PodqRunpodWorker):
    name = "RunPod worker c=8 on podq"
    handler = "bench/handlers/runpod_concurrent_noop.py"
    concurrency = 8
