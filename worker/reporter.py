"""Reporter: one job's writes to the store, in order, batched while a write is in flight.

Chunks and progress updates are queued here and written by one task, so they reach Redis in the
order the handler produced them, and the final result is written only after all of them
(RunPod's progress updates can race the final result: runpod-python#250). While one write is in
flight the next chunks accumulate and go out together, so a fast generator costs one round trip
per batch, not per token. Every write is fenced by the job's attempt: once the store answers
that this attempt no longer owns the job, `lost` is set and nothing more is written.

While Redis is unreachable (a restart, a failover) a write is retried with backoff for up to
RETRY_FOR_S: a result computed during the outage is not thrown away. A retry that lands after
the job moved on (its lease ran out and another attempt took it) is refused by the fence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from serverless.store import JobStore, TransitionResult
from worker.results import Outcome

log = logging.getLogger("podq.worker")

# A generator far ahead of Redis waits here instead of growing memory without bound.
MAX_PENDING_CHUNKS = 4096
RETRY_FOR_S = 60.0

T = TypeVar("T")


class Reporter:
    def __init__(self, store: JobStore, job_id: str, attempt: int) -> None:
        self._store, self.job_id, self.attempt = store, job_id, attempt
        self._chunks: list[bytes] = []
        self._progress: bytes | None = None
        self._closing = False
        self.lost = False
        # the writer task and its events start with the first chunk or progress: most jobs
        # send neither, and their result is written by finish() alone
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event
        self._drained: asyncio.Event

    def _writer(self) -> None:
        if self._task is None:
            self._wake, self._drained = asyncio.Event(), asyncio.Event()
            self._task = asyncio.create_task(self._flush_loop(), name=f"reporter-{self.job_id}")

    async def chunk(self, data: bytes) -> None:
        self._writer()
        self._chunks.append(data)
        self._wake.set()
        if len(self._chunks) >= MAX_PENDING_CHUNKS:
            self._drained.clear()
            await self._drained.wait()

    def progress(self, data: bytes) -> None:
        """Latest progress wins; safe to call from the event loop thread only."""
        self._writer()
        self._progress = data
        self._wake.set()

    async def close(self) -> None:
        """Flush everything queued and stop the writer."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task

    async def finish(self, outcome: Outcome) -> TransitionResult | None:
        """Flush, then write the final result (fenced). None if the job was lost meanwhile."""
        await self.close()
        if self.lost:
            return None
        return await self._retrying("result", lambda: self._store.finish(
            self.job_id, self.attempt, outcome.status, output=outcome.output, error=outcome.error
        ))

    def abandon(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            if self._closing and not self._chunks and self._progress is None:
                return

    async def _flush(self) -> None:
        while (self._chunks or self._progress is not None) and not self.lost:
            if self._chunks:
                batch, self._chunks = self._chunks, []
                self._drained.set()
                ok = await self._retrying("chunks", lambda: self._store.append_chunks(
                    self.job_id, self.attempt, batch))
            else:
                data, self._progress = self._progress, None
                ok = await self._retrying("progress", lambda: self._store.progress(
                    self.job_id, self.attempt, data))
            if not ok:
                log.info("job %s: attempt %d no longer owns the job; dropping its writes",
                         self.job_id, self.attempt)
                self.lost = True
        if self.lost:
            self._chunks, self._progress = [], None
            self._drained.set()

    async def _retrying(self, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """`write()`, retried for RETRY_FOR_S from its first failure (the clock is read only
        once a write fails: this runs for every job)."""
        give_up: float | None = None
        delay = 0.1
        while True:
            try:
                return await write()
            except (RedisError, OSError) as e:
                now = asyncio.get_running_loop().time()
                if give_up is None:
                    give_up = now + RETRY_FOR_S
                elif now >= give_up:
                    raise
                log.warning("job %s: writing its %s failed (%s); retrying in %.1f s",
                            self.job_id, what, e, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)
