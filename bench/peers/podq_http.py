"""podq through HTTP: `podq gateway` (rate limits off) + N worker processes on the no-op handler
(bench/handlers/noop.py, 10 jobs at a time per process), on its own redis-server.

Latency: POST /v2/{ep}/runsync over one keep-alive connection. Throughput: `clients` concurrent
POST /run, then GET /health until its `completed` count has grown by the number submitted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench.common import fan_out, wait_http
from bench.peers.base import PY, Peer
from serverless.redis_server import free_port

KEY = "bench-key"
EP = "bench"


class PodqHttp(Peer):
    name = "podq"

    async def start(self) -> None:
        port = free_port()
        env = {"PODQ_REDIS_URL": self.url, "PODQ_API_KEY": KEY, "PODQ_RATE_LIMITS": "false"}
        self.procs.spawn([PY, "-m", "serverless.cli", "gateway", "--port", str(port)], env)
        for i in range(self.workers):
            self.procs.spawn([PY, "-m", "worker", "bench/handlers/noop.py", "--endpoint", EP,
                              "--worker-id", f"{EP}-{i}"], env)
        self.base = f"http://127.0.0.1:{port}/v2/{EP}"
        await wait_http(f"http://127.0.0.1:{port}/healthz", self.procs.procs)
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"},
                                             connector=aiohttp.TCPConnector(limit=0))

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # /health is a 404 until the first worker registers (the endpoint is in no registry)
            workers = (await self.health()).get("workers", {})
            if workers.get("idle", 0) + workers.get("running", 0) >= self.workers:
                break
            self.procs.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"podq: {self.workers} workers not ready in {timeout:.0f} s")
            await asyncio.sleep(0.05)
        await self.throughput(20 * self.workers, 16)

    async def close_clients(self) -> None:
        if getattr(self, "session", None) is not None:
            await self.session.close()

    async def health(self) -> dict[str, Any]:
        async with self.session.get(f"{self.base}/health") as r:
            return await r.json()

    async def roundtrip(self) -> None:
        async with self.session.post(f"{self.base}/runsync", json={"input": {}}) as r:
            body = await r.json()
        if body.get("status") != "COMPLETED":
            raise RuntimeError(f"podq runsync: {body}")

    async def submit(self) -> None:
        async with self.session.post(f"{self.base}/run", json={"input": {}}) as r:
            if r.status != 200:
                raise RuntimeError(f"podq /run: HTTP {r.status} {await r.text()}")
            await r.read()

    async def throughput(self, total: int, clients: int) -> float:
        jobs = (await self.health())["jobs"]
        before = jobs["completed"] + jobs["failed"]
        failed_before = jobs["failed"]
        t0 = time.perf_counter()
        await fan_out(total, clients, self.submit)
        while True:
            jobs = (await self.health())["jobs"]
            if jobs["completed"] + jobs["failed"] - before >= total:
                break
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        if jobs["failed"] != failed_before:
            raise RuntimeError(f"podq: {jobs['failed'] - failed_before} jobs failed")
        return total / elapsed
