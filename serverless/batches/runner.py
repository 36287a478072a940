"""The batch runner: feeds a batch's inputs to its endpoint's queue and collects the results.

Every gateway replica runs a `Supervisor`: once a second it lists the active batches and takes
the Redis lease of any nobody runs (SET NX PX, renewed every RENEW_S by a task beside the
loop, which stops the loop the moment the lease is found lost), so exactly one
replica drives each batch, and another takes over within LEASE_TTL_MS of a crash. The lease
holder's `Runner` repeats one loop, each step one MULTI/EXEC fenced by the lease (store.py:
a runner that lost it gets LeaseLost and stops):

    feed     read the next inputs (at most max_in_flight in flight, at most plan.window()
             unwritten), submit each as a job with a deterministic id, then save the cursor
             and the in-flight set
    collect  jobs announced on the endpoint's done channel (and, every SWEEP_S, every job in
             flight, in case a message was lost) that ended: their result lines become
             ready, their job records are deleted
    write    a contiguous run of ready lines becomes a results part in the object store,
             then leaves Redis

Why a crash at any point neither runs an input twice nor skips one: jobs are submitted before
the cursor is saved, and a job id is `<batch>-<index>`, which the job store refuses to submit
twice; a restarted runner reads again from the saved cursor, its submits of inputs already
queued are refused (Conflict) and those inputs are simply taken in flight again (and checked
at once: they may have ended meanwhile). A job is collected and its record deleted in one
step, so it is collected once. A part is written before the lines leave Redis, so a crash in
between writes the same part again. Batch jobs keep their record for BATCH_JOB_RETENTION_MS
after they end (not /run's 30 min), so a batch whose gateways were all down for a while
still finds its results.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys
from serverless.batches import plan, results
from serverless.batches.inputs import Item, items
from serverless.batches.model import ACTIVE_STATES, RETRIED_STATUSES, BatchState
from serverless.batches.store import BatchStore, LeaseLost
from serverless.errors import Conflict
from serverless.model import TERMINAL_STATUSES, Policy, RunRequest
from serverless.notify import listen_forever
from serverless.objects import ObjectStore
from serverless.registry import Registry
from serverless.settings import Settings
from serverless.store import JobStore, now_ms

log = logging.getLogger("podq.batches")

LEASE_TTL_MS = 10_000
RENEW_S = 2.0
SCAN_S = 1.0
TICK_S = 0.25  # the longest the loop sleeps when nothing happens (a cancel is seen this fast)
SWEEP_S = 5.0
RATE_S = 2.0
BATCH_JOB_RETENTION_MS = 7 * 24 * 3600 * 1000
# how long a collected job's record stays when its endpoint has a webhook, for the dispatcher
# (serverless/gateway/webhooks.py) to read it; without one it is deleted at once
WEBHOOK_READ_MS = 120_000


def batch_job_store(redis: Redis, settings: Settings) -> JobStore:
    """A JobStore whose jobs keep their records BATCH_JOB_RETENTION_MS after they end."""
    return JobStore(redis, msgspec.structs.replace(settings, result_ttl_run_ms=BATCH_JOB_RETENTION_MS))


class Runner:
    """Drives one batch while this process holds its lease; returns when the batch ended,
    was deleted, or the lease was lost."""

    def __init__(self, batches: BatchStore, jobs: JobStore, objects: ObjectStore, batch_id: str,
                 owner: str) -> None:
        self.batches, self.jobs, self.objects = batches, jobs, objects
        self.registry = Registry(batches.redis)
        self.id, self.owner = batch_id, owner
        self.wake = asyncio.Event()
        self.notified: set[int] = set()
        self.check: set[int] = set()
        self._inputs: AsyncIterator[Item] | None = None
        self._last: AsyncIterator[bytes] | None = None  # the last round's lines (a retry round)
        self._cancelled = False
        self._finished = 0  # results since the last rate update

    async def run(self) -> None:
        row = await self.batches.read(self.id)
        if row is None or row.state not in ACTIVE_STATES:
            return
        self.row, self.round, self.meta = row, row.round, row.meta
        self.cursor, self.written, self.exhausted = row.cursor, row.written, row.exhausted
        self.in_flight = await self.batches.in_flight(self.id)
        self.ready = await self.batches.ready(self.id)
        listening = asyncio.create_task(self._listen())
        looping = asyncio.create_task(self._loop())
        keeping = asyncio.create_task(self._keep_lease(looping))
        try:
            await asyncio.wait((looping,))
        finally:
            for task in (looping, keeping, listening):
                task.cancel()
            await asyncio.gather(looping, keeping, listening, return_exceptions=True)
            await self._close_inputs()
        if not looping.cancelled() and looping.exception() is not None:
            raise looping.exception()

    async def _keep_lease(self, looping: asyncio.Task[None]) -> None:
        """Renew the lease every RENEW_S, beside the loop (a step that waits long on the input
        file or the object store does not let it lapse); when it is lost, stop the loop at
        once, wherever it is, so that it submits and writes nothing another runner now owns."""
        while True:
            await asyncio.sleep(RENEW_S)
            try:
                held = await self.batches.renew_lease(self.id, self.owner, LEASE_TTL_MS)
            except (RedisError, OSError) as e:
                log.warning("batch %s: lease not renewed (%s); retrying", self.id, e)
                continue
            if not held:
                log.warning("batch %s: lease lost; another gateway runs it now", self.id)
                looping.cancel()
                return

    async def _listen(self) -> None:
        ready = asyncio.Event()

        def lost() -> None:
            self.check |= self.in_flight
            self.wake.set()

        await listen_forever(self.batches.redis, keys.done(self.meta.endpoint_id), self._on_done,
                             on_ready=ready.set, on_lost=lost, name=f"batch {self.id}")

    def _on_done(self, message: str) -> None:
        job = message.partition("\n")[0]
        if job == keys.PURGED:
            self.check |= self.in_flight
        elif (index := plan.index_of(self.id, self.round, job)) is not None:
            self.notified.add(index)
        else:
            return
        self.wake.set()

    async def _loop(self) -> None:
        self.check |= self.in_flight  # anything may have ended while nobody ran the batch
        swept = rated = time.monotonic()
        self.waiting_since: float | None = None
        while True:
            now = time.monotonic()
            row = await self.batches.read(self.id)
            if row is None or row.round != self.round:
                return  # deleted, or a new round started under another runner
            self.row = row
            if now - swept >= SWEEP_S:
                self.check |= self.in_flight
                swept = now
            if now - rated >= RATE_S:
                await self._rate(now - rated)
                rated = now
            if row.state is BatchState.CANCELLING and not self._cancelled:
                await self._cancel_in_flight()
            busy = await self._collect()
            if row.state is BatchState.RUNNING:
                busy = await self._feed() or busy
            busy = await self._write() or busy
            if await self._end():
                return
            if not busy:
                self.wake.clear()
                try:
                    async with asyncio.timeout(TICK_S):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    # ---- feed ------------------------------------------------------------------------

    async def _feed(self) -> bool:
        n = plan.to_feed(next_index=self.cursor.index, written=self.written, in_flight=len(self.in_flight),
                         max_in_flight=self.meta.max_in_flight, exhausted=self.exhausted)
        if n == 0:
            return False
        read = await self._read(n)
        submit: dict[int, bytes] = {}
        ready: dict[int, bytes] = {}
        for item, last in read:
            if last is not None and results.head(last)[1] not in RETRIED_STATUSES:
                ready[item.index] = last.rstrip(b"\n")  # carried over: counted already
            elif item.input is None:
                ready[item.index] = plan.failed_line(item.index, item.error or "unreadable")
            else:
                submit[item.index] = item.input
        fresh = await asyncio.gather(*(self._submit(i, value) for i, value in submit.items()))
        self.check |= {i for i, new in zip(submit, fresh) if not new}  # queued by an earlier run
        counted = {"FAILED": sum(1 for item, last in read if item.input is None
                                 and (last is None or results.head(last)[1] in RETRIED_STATUSES))}
        if read:
            self.cursor = read[-1][0].after
        await self.batches.advance(self.id, self.owner, self.cursor, self.exhausted, submit, ready, counted)
        self.in_flight |= set(submit)
        self._add_ready(ready)
        self._finished += counted["FAILED"]
        return bool(read)

    async def _read(self, n: int) -> list[tuple[Item, bytes | None]]:
        if self._inputs is None:
            stream = self.objects.stream(self.meta.input_key, start=self.cursor.offset)
            self._inputs = items(stream, self.meta.format, self.cursor, self.meta.header)
            if self.round > 0:
                self._last = results.round_lines(self.objects, self.id, self.round - 1, self.cursor.index)
        out: list[tuple[Item, bytes | None]] = []
        while len(out) < n:
            item = await anext(self._inputs, None)
            if item is None:
                self.exhausted = True
                break
            out.append((item, await self._last_line(item.index)))
        return out

    async def _last_line(self, index: int) -> bytes | None:
        """The last round's line of input `index` (None in round 0)."""
        if self._last is None:
            return None
        async for line in self._last:
            if results.head(line)[0] == index:
                return line
        raise RuntimeError(f"batch {self.id}: round {self.round - 1} has no result for input {index}")

    async def _submit(self, index: int, value: bytes) -> bool:
        policy = Policy(executionTimeout=self.meta.execution_timeout_ms, lowPriority=self.meta.low_priority)
        try:
            await self.jobs.submit(self.meta.endpoint_id, RunRequest(input=msgspec.Raw(value), policy=policy),
                                   job_id=plan.job_id(self.id, self.round, index))
        except Conflict:
            return False
        return True

    async def _close_inputs(self) -> None:
        for it in (self._inputs, self._last):
            if it is not None:
                await it.aclose()  # type: ignore[attr-defined]

    # ---- collect ---------------------------------------------------------------------

    async def _collect(self) -> bool:
        wanted = (self.notified | self.check) & self.in_flight
        self.notified.clear()
        self.check.clear()
        if not wanted:
            return False
        order = sorted(wanted)
        ids = [plan.job_id(self.id, self.round, i) for i in order]
        records = await asyncio.gather(*(self.jobs.get(j) for j in ids))
        lines: dict[int, bytes] = {}
        counted: Counter[str] = Counter()
        done: list[str] = []
        for index, job, record in zip(order, ids, records):
            if record is not None and record.status not in TERMINAL_STATUSES:
                continue
            lines[index] = plan.result_line(index, job, record)
            counted[record.status.value if record is not None else "FAILED"] += 1
            done.append(job)
        if not lines:
            return False
        # an endpoint webhook is delivered from the job's record: leave it a while to be read
        hooked = await self.registry.endpoint_webhook(self.meta.endpoint_id) is not None
        await self.batches.collect(self.id, self.owner, lines, counted, done,
                                   keep_ms=WEBHOOK_READ_MS if hooked else 0)
        self.in_flight -= set(lines)
        self._add_ready(lines)
        self._finished += len(lines)
        return True

    async def _cancel_in_flight(self) -> None:
        ids = [plan.job_id(self.id, self.round, i) for i in sorted(self.in_flight)]
        await asyncio.gather(*(self.jobs.cancel(j) for j in ids))
        self.check |= self.in_flight
        self._cancelled = True

    # ---- write -----------------------------------------------------------------------

    def _add_ready(self, lines: dict[int, bytes]) -> None:
        if lines and self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.ready |= set(lines)

    def _ending(self) -> bool:
        stopping = self.exhausted or self.row.state is BatchState.CANCELLING
        return stopping and not self.in_flight

    async def _write(self) -> bool:
        wrote = False
        while True:
            run = plan.ready_run(self.written, self.ready)
            waited = time.monotonic() - self.waiting_since if self.waiting_since is not None else 0.0
            if not plan.part_due(run, waited, self._ending()):
                return wrote
            start = self.written
            lines = await self.batches.lines(self.id, start, run)
            await self.objects.put(results.part_key(self.id, self.round, start), b"\n".join(lines) + b"\n")
            await self.batches.written(self.id, self.owner, start, run)
            self.written += run
            self.ready -= set(range(start, start + run))
            self.waiting_since = time.monotonic() if self.ready else None
            wrote = True

    # ---- end -------------------------------------------------------------------------

    async def _end(self) -> bool:
        if not self._ending() or self.written != self.cursor.index:
            return False
        state = self.row.state
        to = BatchState.CANCELLED if state is BatchState.CANCELLING else BatchState.COMPLETED
        if not await self.batches.move(self.id, to, [state], {"finished_at": now_ms(), "rate": 0}):
            return False  # cancelled meanwhile: the next turn ends it CANCELLED
        if self.round > 0:
            await self.objects.delete_prefix(results.round_prefix(self.id, self.round - 1))
        log.info("batch %s %s: %d inputs, round %d", self.id, to.value.lower(), self.cursor.index, self.round)
        return True

    async def _rate(self, dt_s: float) -> None:
        self.rate = plan.next_rate(self.row.rate, self._finished, dt_s)
        self._finished = 0
        await self.batches.set_rate(self.id, self.rate)


class Supervisor:
    """Runs every active batch whose lease this process can take (one per gateway process)."""

    def __init__(self, redis: Redis, settings: Settings, objects: ObjectStore) -> None:
        self.batches = BatchStore(redis)
        self.jobs = batch_job_store(redis, settings)
        self.objects = objects
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def run_forever(self) -> None:
        while True:
            try:
                await self.scan()
            except (RedisError, OSError) as e:
                log.warning("batch supervisor cannot reach Redis (%s); retrying", e)
            await asyncio.sleep(SCAN_S)

    async def scan(self) -> None:
        """Start a runner for each active batch nobody runs."""
        for batch_id in await self.batches.active():
            if batch_id not in self.tasks and await self.batches.take_lease(batch_id, self.owner, LEASE_TTL_MS):
                self.tasks[batch_id] = asyncio.create_task(self._drive(batch_id), name=f"podq-batch-{batch_id}")

    async def _drive(self, batch_id: str) -> None:
        try:
            await Runner(self.batches, self.jobs, self.objects, batch_id, self.owner).run()
        except asyncio.CancelledError:
            raise
        except LeaseLost as e:  # paused past the lease: another gateway runs the batch now
            log.warning("%s; this gateway stops running it", e)
        except Exception:  # the next scan starts it again, from what Redis holds
            log.exception("batch %s: runner stopped; it resumes on the next scan", batch_id)
        finally:
            self.tasks.pop(batch_id, None)
            try:
                await self.batches.release_lease(batch_id, self.owner)
            except (RedisError, OSError):
                pass  # it runs out on its own

    async def close(self) -> None:
        """Stop every runner and hand its batch back at once (the lease is released)."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
