"""The watchdog: a thread that acts for the event loop when an async handler blocks it.

An `async def` handler that runs blocking code (`time.sleep`, a tight loop, a sync HTTP call)
stops the worker's event loop: no heartbeat, no lease renewal, and `asyncio.timeout` cannot fire,
so executionTimeout means nothing. Left alone, the job's lease would run out, another worker would
take it and block the same way, until its attempts were spent.

The loop stamps `last_tick` every 0.1 s. This thread checks the stamp every 0.1 s:

- loop silent for a heartbeat, running jobs within their timeout: the thread renews their leases
  and writes the worker's heartbeat itself (the process is alive, the job is running);
- loop silent for STALL_S and a job STALL_S past its executionTimeout: the thread ends that job
  TIMED_OUT (fenced by its attempt, like any worker write), hands the process's other jobs back
  to the queue (not counted as a try), and calls `on_blocked`, which re-executes the process
  (worker/process.py: the same pid and worker id, a fresh interpreter), so the worker recovers
  with or without a supervisor.

A process stopped as a whole (SIGSTOP, a paused VM) stops this thread too: its leases run out and
the jobs are reaped as usual. The thread talks to Redis through its own connection and event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from serverless.errors import PodqError
from serverless.model import Status
from serverless.queue import connect
from serverless.settings import Settings
from serverless.store import JobStore
from worker import results

if TYPE_CHECKING:
    from worker.runtime import Deadline, Worker

log = logging.getLogger("podq.worker")

TICK_S = 0.1
STALL_S = 1.0
CALL_TIMEOUT_S = 5.0


class Watchdog:
    def __init__(self, worker: Worker, settings: Settings, on_blocked: Callable[[], None]) -> None:
        self.worker, self.settings, self.on_blocked = worker, settings, on_blocked
        self.heartbeat_s = settings.heartbeat_ms / 1000
        self.last_tick = time.monotonic()
        self._last_keepalive = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="podq-watchdog", daemon=True)
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the thread's own
        self._store: JobStore | None = None

    def start(self) -> None:
        """Start ticking (call on the worker's event loop) and watching."""
        self._ticker = asyncio.create_task(self._tick(), name="watchdog-tick")
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(TICK_S)

    # ---- the thread ---------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._stop.wait(TICK_S):
                try:
                    self.check(time.monotonic())
                except Exception:  # never let the watchdog die quietly
                    log.exception("watchdog check failed")
        finally:
            if self._loop is not None:
                if self._store is not None:
                    self._call(self._store.close())
                self._loop.close()

    def check(self, now: float) -> None:
        stalled = now - self.last_tick
        if stalled < self.heartbeat_s or stalled < 2 * TICK_S:
            return
        jobs = dict(self.worker.deadlines)
        if not jobs:
            return  # nothing of a user's is running: a stalled runtime is the scaler's business
        over = {job_id: d for job_id, d in jobs.items() if now >= d.at + STALL_S}
        if over and stalled >= STALL_S:
            self._give_up(over, jobs, stalled)
        elif now - self._last_keepalive >= self.heartbeat_s:
            self._last_keepalive = now
            self._call(self._keep_alive(jobs))

    async def _keep_alive(self, jobs: dict[str, Deadline]) -> None:
        store = await self._store_()
        await store.renew(self.worker.endpoint, {job_id: d.attempt for job_id, d in jobs.items()})
        await store.beat(self.worker.beat())

    def _give_up(self, over: dict[str, Deadline], jobs: dict[str, Deadline], stalled: float) -> None:
        log.error("the event loop has been blocked for %.1f s and job(s) %s ran past their "
                  "executionTimeout: ending them TIMED_OUT and re-executing this worker",
                  stalled, ", ".join(sorted(over)))
        self._call(self._settle(over, jobs))
        self.on_blocked()

    async def _settle(self, over: dict[str, Deadline], jobs: dict[str, Deadline]) -> None:
        store = await self._store_()
        for job_id, d in over.items():
            error = (results.timed_out(d.timeout_ms).error or "") + results.BLOCKED_LOOP_NOTE
            written = await store.finish(job_id, d.attempt, Status.TIMED_OUT, error=error)
            log.error("job %s attempt %d -> TIMED_OUT (event loop blocked), result %s",
                      job_id, d.attempt, "written" if written.outcome == "ok" else "rejected (stale)")
        for job_id, d in jobs.items():
            if job_id not in over:  # blocked behind the culprit: back to the queue, no try spent
                await store.requeue(job_id, d.attempt)

    async def _store_(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(await connect(self.settings.redis_dsn), self.settings)
        return self._store

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(asyncio.wait_for(coro, CALL_TIMEOUT_S))
        except (RedisError, OSError, PodqError, asyncio.TimeoutError) as e:
            log.warning("watchdog could not reach Redis: %s", e)
