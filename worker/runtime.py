"""Worker: take a job, run the handler under its timeout and cancel signal, report; drain on SIGTERM.

The take loop never polls on a timer: with a free slot it takes from the queue (one Lua call),
and when the queue is empty it blocks on the endpoint's doorbell, which a submit to an empty
queue rings; an idle worker's next take rides behind that BLPOP (serverless/doorbell.py), so
Redis leases the new job to the worker it wakes in that turn.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from contextlib import aclosing
from contextvars import ContextVar
from typing import Any

import msgspec
from redis.exceptions import RedisError

from serverless import doorbell, nvml, periodic
from serverless.codec import encode_json
from serverless.model import Status, TakenJob, WorkerBeat, WorkerState
from serverless.autopipeline import AutoPipeline
from serverless.settings import Settings
from serverless.store import JobStore, now_ms
from worker import handlers, heartbeat, results
from worker.config import HandlerConfig
from worker.reporter import Reporter
from worker.results import Outcome

log = logging.getLogger("podq.worker")

# How long a sync handler that ran past its timeout gets to return before its thread counts as stuck.
STUCK_AFTER_S = 0.5
# The longest doorbell wait; a take follows it whether or not the bell rang.
BELL_WAIT_S = 1.0

_current: Worker | None = None
# the Reporter of the job attempt whose code runs in this context (its task, and the pool threads
# that inherit the task's context)
_reporter: ContextVar[Reporter | None] = ContextVar("podq_reporter", default=None)


def current() -> Worker | None:
    """The worker running in this process, if any (used by progress_update)."""
    return _current


class ActiveJob:
    __slots__ = ("task", "reporter", "released", "finishing")

    def __init__(self, task: asyncio.Task[None], reporter: Reporter) -> None:
        self.task, self.reporter, self.released = task, reporter, False
        self.finishing = False  # the result is being written: the fenced write settles it


class Deadline(msgspec.Struct, frozen=True):
    """A running job as the watchdog thread sees it (worker/watchdog.py)."""

    attempt: int
    timeout_ms: int
    at: float  # time.monotonic() when the job's executionTimeout runs out


class Worker:
    def __init__(
        self, config: HandlerConfig, store: JobStore, settings: Settings, endpoint: str,
        worker_id: str,
    ) -> None:
        self.config, self.store = config, store
        self.settings, self.endpoint, self.worker_id = settings, endpoint, worker_id
        self.active: dict[str, ActiveJob] = {}
        self.concurrency = 1
        self.refresh_requested = False
        self.started_at = now_ms()
        self.idle_since = self.started_at
        self.version = int(os.environ.get("PODQ_WORKER_VERSION", "0") or 0)
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._doorbell: doorbell.DoorbellWait | None = None  # the doorbell wait in flight
        self._waking: asyncio.Future[None] | None = None  # request_stop's doorbell.wake call
        # the doorbell's BLPOPs and the takes behind them, on a connection of their own (a
        # BLPOP holds back what follows it) with the store client's settings, counted in its
        # pool (serverless/autopipeline.py)
        self._bell_line = AutoPipeline(store.redis)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pool = handlers.JobThreads(max_workers=256, thread_name_prefix="podq-handler")
        self._kind = handlers.kind_of(config.handler)  # once: inspect is slow for every job
        # job id -> Deadline; written on the loop, read by the watchdog thread (dict copies
        # are atomic under the GIL)
        self.deadlines: dict[str, Deadline] = {}

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve jobs until stopped, then drain."""
        global _current
        _current = self
        interval = self.settings.heartbeat_ms / 1000
        duties = [
            periodic.every(interval, self._renew),
            periodic.every(interval, self._beat),
            periodic.every(interval, self._reap),
            heartbeat.watch_cancels(self.store.redis, self.endpoint, self.stop_job),
        ]
        tasks = [asyncio.create_task(d) for d in duties]
        log.info("worker %s serving endpoint %s", self.worker_id, self.endpoint)
        try:
            await self._take_loop()
            await self._drain()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._deregister()
            self._pool.shutdown(wait=False, cancel_futures=True)
            await self._bell_line.aclose()
            _current = None

    def request_stop(self, *, refresh: bool = False) -> None:
        """Stop taking jobs; in-flight jobs get the grace period (SIGTERM, refresh_worker)."""
        self.refresh_requested = self.refresh_requested or refresh
        self._stopping.set()
        self._slot_free.set()  # a take loop waiting for a free slot looks at _stopping again
        if self._doorbell is not None:  # end the doorbell wait: its take answers, the loop stops
            self._waking = asyncio.ensure_future(doorbell.wake(self.store, self.endpoint,
                                                               self.worker_id))
            self._waking.add_done_callback(_log_wake_failure)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_stop)

    def stop_job(self, job_id: str) -> None:
        """Stop a running job whose result no longer counts (cancelled, or lease lost)."""
        active = self.active.get(job_id)
        if active is not None and not active.finishing:
            # (a finishing job is left alone: its fenced write is accepted or refused, and a
            # renew that raced the write reports the job as no longer held)
            log.info("job %s: stopping (cancelled or lease lost)", job_id)
            active.task.cancel()

    def progress(self, job_id: str, data: Any) -> None:
        """progress_update from a handler: from any thread, ordered before the final result.

        It is written as the attempt whose code calls it (the context its task and threads
        carry), so an older attempt still running here cannot write under a newer one's token.
        """
        reporter = _reporter.get()
        if reporter is None or reporter.job_id != job_id:  # called from outside the job's code
            active = self.active.get(job_id)
            reporter = active.reporter if active is not None else None
        if reporter is None:
            log.warning("progress_update for job %s, which this worker is not running", job_id)
            return
        payload = encode_json(data)
        if threading.get_ident() == self._loop_thread:
            reporter.progress(payload)
        else:
            self._loop.call_soon_threadsafe(reporter.progress, payload)

    # ---- taking -------------------------------------------------------------------------

    async def _take_loop(self) -> None:
        drained = False  # the last take emptied the queue: wait for the bell before the next
        while not self._stopping.is_set():
            self.concurrency = self.config.next_concurrency(self.concurrency)
            if len(self.active) >= self.concurrency:
                self._slot_free.clear()
                await self._slot_free.wait()  # set by a finished job, or by request_stop
                continue
            try:
                rode = await self._wait_for_ring() if drained else None
                if rode is None:  # not drained, or a ring with no take behind it: take now
                    if self._stopping.is_set():
                        break
                    free = self.concurrency - len(self.active)
                    taken = await self.store.take_many(self.endpoint, self.worker_id, free)
                else:
                    taken, free = rode
            except (RedisError, OSError) as e:
                log.warning("taking a job failed: %s (retrying in 0.5 s)", e)
                drained = False
                await asyncio.sleep(0.5)
                continue
            if self._stopping.is_set():  # stopped while taking: what came is not started here
                await self._give_back(taken)
                break
            # fewer than asked: the take found the queue empty and silenced the bell, so the
            # next submit rings it (a take that skipped expired jobs and left some rings it);
            # taking again at once would only find nothing (one Redis call per job, before)
            drained = len(taken) < free
            for job in taken:
                self._start(job)

    async def _wait_for_ring(self) -> tuple[list[TakenJob], int] | None:
        """Wait on the endpoint's doorbell, at most a second (a safety net for a lost ring: the
        bell is a hint, the queue is the truth). While this worker is idle, a take for all its
        slots rides behind the wait (serverless/doorbell.py): the jobs it leased and how many it
        asked for, or None when the wait ended with jobs still running here (the caller takes,
        sized now). request_stop cuts the wait short (doorbell.wake)."""
        wait = self._doorbell = doorbell.DoorbellWait(self.store, self._bell_line, self.endpoint,
                                                      self.worker_id, BELL_WAIT_S)
        try:
            if not self.active:
                wait.take_behind(self.concurrency)
            taken = await wait.wait()
        finally:
            self._doorbell = None
        return None if taken is None else (taken, wait.count)

    async def _give_back(self, taken: list[TakenJob]) -> None:
        """Requeue jobs taken after a stop was asked (the try is not counted)."""
        for job in taken:
            try:
                await self.store.requeue(job.id, job.attempt)
                log.info("job %s: taken as the worker stopped; handed back to the queue", job.id)
            except (RedisError, OSError) as e:
                log.warning("job %s: could not hand it back to the queue (%s); it runs again "
                            "when its lease runs out", job.id, e)

    def _start(self, taken: TakenJob) -> None:
        stale = self.active.get(taken.id)
        if stale is not None:
            # this worker still runs an older attempt: its lease ran out (Redis was away longer
            # than the lease), the job was requeued and came back here. That attempt's writes
            # are refused now; stop it so only the new one runs (and is renewed)
            log.warning("job %s: taken again as attempt %d while attempt %d still ran here "
                        "(its lease ran out); stopping the old one", taken.id, taken.attempt,
                        stale.reporter.attempt)
            self.stop_job(taken.id)
        reporter = Reporter(self.store, taken.id, taken.attempt)
        task = asyncio.create_task(self._run_job(taken, reporter), name=f"job-{taken.id}")
        active = self.active[taken.id] = ActiveJob(task, reporter)
        task.add_done_callback(lambda _: self._job_done(taken.id, active))

    def _attempt_of(self, taken: TakenJob) -> ActiveJob | None:
        """This attempt's entry in `active` (None once a newer attempt of the job replaced it)."""
        active = self.active.get(taken.id)
        return active if active is not None and active.reporter.attempt == taken.attempt else None

    def _job_done(self, job_id: str, done: ActiveJob) -> None:
        if self.active.get(job_id) is done:  # not a newer attempt of the same job
            del self.active[job_id]
        if not self.active:
            self.idle_since = now_ms()
            self._take_behind_when_all_finish()  # idle now: every slot is free
        self._slot_free.set()

    def _take_behind_when_all_finish(self) -> None:
        """Every job here (if any) is done running and only writing its result: the take
        behind the doorbell goes now, with the results, instead of after their replies (one Redis wake-up
        and one write less per sequential job). A finishing job holds no slot: its handler
        has returned."""
        if (self._doorbell is not None and not self._stopping.is_set()
                and all(a.finishing for a in self.active.values())):
            self._doorbell.take_behind(self.concurrency)

    # ---- running ------------------------------------------------------------------------

    async def _run_job(self, taken: TakenJob, reporter: Reporter) -> None:
        started = time.perf_counter()
        timeout_ms = taken.execution_timeout_ms or self.settings.execution_timeout_ms
        handlers.current_job.set(taken.id)  # this task's context: the pool tags its threads
        _reporter.set(reporter)  # progress_update from this attempt's code writes as this attempt
        self.deadlines[taken.id] = Deadline(taken.attempt, timeout_ms,
                                            time.monotonic() + timeout_ms / 1000)
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                outcome = await self._execute(taken, reporter)
        except TimeoutError:
            outcome = results.timed_out(timeout_ms)
            if await self._thread_stuck(taken.id):
                # Python cannot stop a thread: finish the other jobs, then become a fresh process
                log.warning("job %s: its sync handler is still running past its timeout of %d ms; "
                            "the worker re-executes itself once its other jobs are done",
                            taken.id, timeout_ms)
                outcome = msgspec.structs.replace(
                    outcome, error=outcome.error + results.STUCK_THREAD_NOTE, refresh=True)
        except asyncio.CancelledError:
            self._forget_deadline(taken)
            await self._after_stop(taken, reporter)
            return
        self._forget_deadline(taken)
        active = self._attempt_of(taken)
        if active is not None:
            active.finishing = True
        self._take_behind_when_all_finish()
        try:
            result = await reporter.finish(outcome)
        except (RedisError, OSError) as e:  # Redis gone for longer than the reporter retries
            log.error("job %s attempt %d: its result could not be written (%s); the job runs again "
                      "when its lease runs out", taken.id, taken.attempt, e)
            return
        written = "written" if result is not None and result.outcome == "ok" else "rejected (stale)"
        log.info("%6.3fs job %s attempt %d -> %s, result %s", time.perf_counter() - started,
                 taken.id, taken.attempt, outcome.status, written)
        if outcome.refresh or self.config.refresh_worker:
            self.request_stop(refresh=True)

    def _forget_deadline(self, taken: TakenJob) -> None:
        deadline = self.deadlines.get(taken.id)
        if deadline is not None and deadline.attempt == taken.attempt:
            del self.deadlines[taken.id]

    async def _thread_stuck(self, job_id: str) -> bool:
        """Whether the job's sync code still runs in a pool thread after it timed out."""
        deadline = time.monotonic() + STUCK_AFTER_S
        while self._pool.busy(job_id):
            if time.monotonic() >= deadline:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _execute(self, taken: TakenJob, reporter: Reporter) -> Outcome:
        """The job's outcome; anything the handler raises (or an input that does not decode:
        written to Redis by something other than podq) fails the job."""
        aggregate: list[bytes] | None = [] if self.config.return_aggregate_stream else None
        streaming = handlers.is_streaming(self.config.handler, self._kind)
        try:
            job = job_dict(taken)
            if self._kind is handlers.Kind.COROUTINE:  # the usual handler: no generator to drive
                return results.from_return(await self.config.handler(job))
            # closed here, not by the garbage collector: a generator left at its Return would
            # be finalized through the loop's asyncgen hook (a thread-safe wake-up and a task
            # per job)
            async with aclosing(handlers.run(self.config.handler, job, self._pool, self._kind)) as items:
                async for item in items:
                    if isinstance(item, handlers.Return):
                        return results.from_stream(aggregate) if streaming else results.from_return(item.value)
                    failed = await self._stream(item.value, reporter, aggregate)
                    if failed is not None:
                        return failed
        except Exception as e:
            return results.from_exception(e, self.worker_id, memory_cap_mb=self.settings.worker_memory_mb)
        return results.from_stream(aggregate)

    async def _stream(self, item: Any, reporter: Reporter, aggregate: list[bytes] | None) -> Outcome | None:
        error = results.chunk_error(item)
        if error is not None:
            return Outcome(Status.FAILED, error=error)
        data = results.encode_chunk(item)
        if isinstance(data, Outcome):
            return data
        if len(data) > self.settings.max_chunk_bytes:
            return results.chunk_too_large(len(data), self.settings.max_chunk_bytes)
        await reporter.chunk(data)
        if aggregate is not None:
            aggregate.append(data)
        return None

    async def _after_stop(self, taken: TakenJob, reporter: Reporter) -> None:
        """The job task was cancelled: by the client, a lost lease, or a drain past grace."""
        active = self._attempt_of(taken)
        reporter.abandon()
        if active is not None and active.released:
            ok = await self.store.requeue(taken.id, taken.attempt)
            log.info("job %s: handed back to the queue on shutdown (%s)", taken.id,
                     "requeued" if ok else "already moved on")

    # ---- duties -------------------------------------------------------------------------

    async def _renew(self) -> None:
        attempts = {job_id: a.reporter.attempt for job_id, a in self.active.items()}
        for job_id in await self.store.renew(self.endpoint, attempts):
            self.stop_job(job_id)

    async def _beat(self) -> None:
        await self.store.beat(self.beat())

    async def _reap(self) -> None:
        requeued, failed = await self.store.reap(self.endpoint)
        if requeued or failed:
            log.warning("reaped jobs of lost workers on %s: %d requeued, %d failed",
                        self.endpoint, requeued, failed)

    def beat(self) -> WorkerBeat:
        return WorkerBeat(
            id=self.worker_id, endpoint=self.endpoint,
            state=WorkerState.RUNNING if self.active else WorkerState.IDLE,
            jobs=sorted(self.active), concurrency=self.concurrency,
            gpus=nvml.gpus(os.environ.get("CUDA_VISIBLE_DEVICES")),
            pid=os.getpid(), host=socket.gethostname(), seen_at=now_ms(), started_at=self.started_at,
            idle_since=0 if self.active else self.idle_since, version=self.version,
            interval_ms=self.settings.heartbeat_ms,  # silence is judged by this worker's own period
        )

    async def _drain(self) -> None:
        """Let in-flight jobs finish within the grace period; requeue the rest."""
        if not self.active:
            return
        grace = self.settings.grace_period_s
        log.info("draining %d job(s), grace %.1f s", len(self.active), grace)
        tasks = [a.task for a in self.active.values()]
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for active in list(self.active.values()):
            active.released = True
            if not active.finishing:  # one writing its result is left to finish: its fenced
                active.task.cancel()  # write is accepted or refused, never cut in half
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _deregister(self) -> None:
        try:
            await self.store.remove_worker(self.endpoint, self.worker_id)
        except (RedisError, OSError) as e:
            log.warning("could not remove worker %s from the registry: %s", self.worker_id, e)


def _log_wake_failure(waking: asyncio.Future[None]) -> None:
    if not waking.cancelled() and waking.exception() is not None:
        log.warning("could not cut the doorbell wait short (%s); stopping within %.0f s",
                    waking.exception(), BELL_WAIT_S)


def job_dict(taken: TakenJob) -> dict[str, Any]:
    """The job as a RunPod handler receives it: {"id", "input"} plus webhook / s3Config."""
    job: dict[str, Any] = {"id": taken.id, "input": msgspec.json.decode(taken.input)}
    if taken.webhook:
        job["webhook"] = taken.webhook
    if taken.s3_config is not None:
        job["s3Config"] = msgspec.json.decode(taken.s3_config)
    return job

