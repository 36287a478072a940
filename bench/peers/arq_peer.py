"""Plain arq 0.28: one `arq` worker process per worker (max_jobs 10, its default); the client
enqueues with `enqueue_job` and waits with `Job.result(poll_delay=...)`, arq's only way to wait.
`poll_delay` 0.5 s is arq's default for both the worker and `result()`; the fast variant uses
5 ms for both."""

from __future__ import annotations

from typing import Any

from bench.peers.base import PY, Peer


class ArqPeer(Peer):
    name = "arq (poll 0.5 s)"
    settings_path = "bench.handlers.arq_noop.WorkerSettings"
    poll_delay = 0.5

    async def start(self) -> None:
        from arq.connections import RedisSettings, create_pool

        for _ in range(self.workers):
            self.procs.spawn([PY, "-m", "arq", self.settings_path], {"BENCH_REDIS_URL": self.url})
        self.pool = await create_pool(RedisSettings.from_dsn(self.url))

    async def close_clients(self) -> None:
        if getattr(self, "pool", None) is not None:
            await self.pool.aclose()

    async def submit(self) -> Any:
        return await self.pool.enqueue_job("noop")

    async def result(self, job: Any) -> None:
        await job.result(timeout=self.result_timeout, poll_delay=self.poll_delay)


class ArqFastPeer(ArqPeer):
    name = "arq (poll 5 ms)"
    settings_path = "bench.handlers.arq_fastpoll.WorkerSettings"
    poll_delay = 0.005
