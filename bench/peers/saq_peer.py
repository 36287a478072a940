"""SAQ: one `python -m saq` process per worker (concurrency 10 each, BLMOVE dequeue); the client
enqueues with `Queue.enqueue` and waits on SAQ's pub/sub multiplexer, the mechanism behind
`Job.refresh(until_complete=...)`, subscribing before it reads the job (see `result`)."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.peers.base import PY, Peer


class SaqPeer(Peer):
    name = "SAQ"

    async def start(self) -> None:
        from saq import Queue

        for _ in range(self.workers):
            self.procs.spawn([PY, "-m", "saq", "bench.handlers.saq_noop.settings", "--quiet"],
                             {"BENCH_REDIS_URL": self.url})
        self.queue = Queue.from_url(self.url)
        await self.queue.connect()
        # SAQ's pub/sub multiplexer unsubscribes when its last waiter leaves and re-subscribes
        # (PSUBSCRIBE, in a background task) on the next wait: a job that completes in between
        # is missed and its waiter sleeps out the timeout. One idle listener for the whole run
        # keeps the subscription open, as a long-running SAQ client would.
        self.keepalive = asyncio.create_task(
            self.queue.listen(["bench-keepalive"], lambda *_: False, timeout=None))

    async def close_clients(self) -> None:
        task = getattr(self, "keepalive", None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if getattr(self, "queue", None) is not None:
            await self.queue.disconnect()

    async def submit(self) -> Any:
        return await self.queue.enqueue("noop")

    async def result(self, job: Any) -> None:
        """Wait the way `Job.refresh(until_complete=...)` does (SAQ's pub/sub multiplexer), but
        subscribe before reading the job: refresh() reads first and subscribes after, so under
        load a completion published in between is lost and the waiter sleeps out its timeout
        (seen as 5-10 s stalls in this benchmark)."""
        from saq.job import TERMINAL_STATUSES, Status

        mux = self.queue._pubsub
        inbox = await mux.subscribe(job.id)
        try:
            await job.refresh()
            while job.status not in TERMINAL_STATUSES:
                try:
                    message = await asyncio.wait_for(inbox.get(), 5)
                except TimeoutError:
                    await job.refresh()
                    continue
                if Status[message["data"].decode().upper()] in TERMINAL_STATUSES:
                    await job.refresh()
        finally:
            await mux.unsubscribe(inbox)
        if job.status != Status.COMPLETE:
            raise RuntimeError(f"SAQ job {job.key} ended {job.status}: {job.error}")
