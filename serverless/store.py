"""JobStore: the one job store the gateway, the workers and the scaler share.

It takes records and returns records; every status change is one call of a Redis function
(serverless/functions.py, serverless/lua/) whose legal moves come from lifecycle.TRANSITIONS.
A lost race returns a value (None, False or a TransitionResult), never an exception: the caller
decides what it means for its user.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import clock, keys, lifecycle
from serverless.autopipeline import pairs
from serverless.clock import now_ms
from serverless.codec import beat_decoder, encode_json, record_fields, record_from_hash, taken_from_reply
from serverless.errors import BadRequest, Conflict, NotFound
from serverless.functions import Library
from serverless.lifecycle import Event
from serverless.model import (
    Chunk,
    Health,
    JobCounts,
    JobRecord,
    QueueStats,
    RunRequest,
    Status,
    TakenJob,
    TERMINAL_STATUSES,
    WorkerBeat,
)
from serverless.notify import Notifier
from serverless.settings import Settings

TTL_ERROR = "job was still queued when its ttl of %d ms (counted from submission) ran out"
TIMEOUT_ERROR = (
    "execution took longer than executionTimeout of %d ms; "
    "raise policy.executionTimeout or make the handler faster"
)
PURGE_ERROR = "removed from the queue by purge-queue"
PURGE_BATCH = 1000  # queued jobs ended per purge script call
CHUNK_STREAM_MAXLEN = 1_000_000


class TransitionResult(msgspec.Struct):
    outcome: str  # ok | missing | refused | stale
    status: Status | None = None  # the status the job had before


def new_job_id(sync: bool) -> str:
    """RunPod-shaped ids: `<uuid>-u1` for /run, `sync-<uuid>-e1` for /runsync."""
    return f"sync-{_uuid4()}-e1" if sync else f"{_uuid4()}-u1"


class _RandomPool:
    """os.urandom read 4 KiB at a time; emptied in a forked child, so no two processes ever
    hand out the same bytes."""

    def __init__(self) -> None:
        self.buffer, self.at = b"", 0
        os.register_at_fork(after_in_child=self.clear)

    def clear(self) -> None:
        self.buffer, self.at = b"", 0

    def take16(self) -> bytes:
        if self.at + 16 > len(self.buffer):
            self.buffer, self.at = os.urandom(4096), 0
        self.at += 16
        return self.buffer[self.at - 16:self.at]


_random = _RandomPool()


def _uuid4() -> str:
    """str(uuid.uuid4()) with one system call per 256 ids, not per id (a gateway makes one per
    request), and without building a UUID object: the version and variant bits are set here,
    as uuid.UUID(bytes=..., version=4) sets them."""
    raw = bytearray(_random.take16())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant RFC 4122
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class JobStore:
    """All job reads and writes. One instance per process, shared by its tasks."""

    def __init__(self, redis: Redis, settings: Settings, notifier: Notifier | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self._unreachable_at: float | None = None  # time.monotonic(); see note_unreachable
        self._lib = Library(redis)  # its AutoPipeline also batches the hot reads (get)
        self._notifier = notifier

    @property
    def library(self) -> Library:
        """The function library this store calls (a worker's doorbell sends its take by name)."""
        return self._lib

    async def close(self) -> None:
        if self._notifier is not None:
            await self._notifier.close()
        await self._lib.pipeline.aclose()
        await self.redis.aclose()

    # ---- gateway side -------------------------------------------------------------------

    def new_record(
        self, endpoint: str, request: RunRequest, *, sync: bool, job_id: str | None, now: int
    ) -> JobRecord:
        """The record a submission creates (pure)."""
        policy = request.policy
        s = self.settings
        return JobRecord(
            id=job_id or new_job_id(sync),
            endpoint=endpoint,
            status=Status.IN_QUEUE,
            input=request.input,
            submitted_at=now,
            # None: the worker applies its endpoint's execution_timeout_ms (its own setting)
            execution_timeout_ms=(policy and policy.executionTimeout) or None,
            ttl_ms=(policy and policy.ttl) or s.job_ttl_ms,
            low_priority=bool(policy and policy.lowPriority),
            webhook=request.webhook,
            s3_config=None if request.s3Config is msgspec.UNSET else request.s3Config,
            retention_ms=s.result_ttl_sync_ms if sync else s.result_ttl_run_ms,
            max_attempts=s.max_attempts,
        )

    async def submit(
        self,
        endpoint: str,
        request: RunRequest,
        *,
        sync: bool = False,
        job_id: str | None = None,
        now: int | None = None,
    ) -> JobRecord:
        """Queue a job (one round trip). Raises Conflict if `job_id` is already taken."""
        _check_id(endpoint, "endpoint")
        record = self.new_record(endpoint, request, sync=sync, job_id=job_id, now=now or now_ms())
        await self._insert(record, fresh=job_id is None)
        return record

    async def _insert(self, record: JobRecord, *, fresh: bool) -> None:
        """Write and queue a new record. fresh: its id was just generated (a uuid4), so the
        check that no job has it is skipped (one Redis command less per job)."""
        if not fresh:  # a generated id is valid by construction
            _check_id(record.id, "job")
        score = record.submitted_at + (keys.LOW_PRIORITY_OFFSET if record.low_priority else 0)
        args = [record.endpoint, record.id, score, "1" if fresh else "",
                *record_fields(record), "score", score]
        if not await self._lib.call("submit", [keys.job(record.id)], args):
            raise Conflict(f"a job with id '{record.id}' already exists; use another id")

    async def get(self, job_id: str, now: int | None = None) -> JobRecord | None:
        """The job's record, or None if unknown or past its retention. Applies ttl expiry."""
        if not keys.valid_id(job_id):
            return None
        fields = pairs(await self._lib.pipeline.execute("HGETALL", keys.job(job_id)))
        if not fields or b"status" not in fields:
            return None
        record = record_from_hash(fields)
        now = now or now_ms()
        if lifecycle.is_expired(record, now):
            error = TTL_ERROR % (record.ttl_ms or 0)
            await self._transition(job_id, Event.EXPIRE, now, set_={"error": error})
            return await self.get(job_id, now)
        return record

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Wait until the job is terminal or `timeout_s` passes; returns the latest record.

        Push-based: the finishing script publishes the id on the endpoint's done channel and
        the process's Notifier wakes this waiter. The record is re-read once a second as well,
        so a notification lost to a reconnect costs at most a second, never a hang.
        """
        async with self.watching(job_id) as event:
            return await self._wait_on(job_id, event, timeout_s, read_first=True)

    @asynccontextmanager
    async def watching(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An event this process's Notifier sets when the job may have ended (its id was
        published on the done channel, a purge ended many jobs, or the subscription dropped):
        clear it, then read the record, and it is set again by the next such moment."""
        notifier = await self._started_notifier()
        event = notifier.register(job_id)
        try:
            yield event
        finally:
            notifier.unregister(job_id, event)

    async def submit_and_wait(
        self, endpoint: str, request: RunRequest, timeout_s: float, *, sync: bool = True
    ) -> JobRecord:
        """Submit and wait for the result (/runsync). The waiter is registered before the
        job exists, so no read is needed before the first notification, and none after it when
        the notification carried the result (a small one, written by the job's worker)."""
        _check_id(endpoint, "endpoint")
        record = self.new_record(endpoint, request, sync=sync, job_id=None, now=now_ms())
        # watching(), spelled out: this is every /runsync request's path, and a generator
        # context manager costs it two more frames to create and resume
        notifier = self._notifier if self._notifier is not None and self._notifier.started \
            else await self._started_notifier()
        event = notifier.register(record.id)
        try:
            await self._insert(record, fresh=True)
            latest = await self._wait_on(record.id, event, timeout_s, read_first=False,
                                         submitted=record)
            return latest or record
        finally:
            notifier.unregister(record.id, event)

    async def _started_notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(self.redis)
        await self._notifier.start()
        return self._notifier

    async def _wait_on(
        self, job_id: str, event: asyncio.Event, timeout_s: float, *, read_first: bool,
        submitted: JobRecord | None = None,
    ) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        record: JobRecord | None = None
        if not read_first:
            await _wait_event(event, min(timeout_s, 1.0))
        while True:
            event.clear()  # before the read: a doorbell that rings during it is not lost
            record = self._announced_end(job_id, submitted) or await self.get(job_id)
            remaining = deadline - loop.time()
            if record is None or record.status in TERMINAL_STATUSES or remaining <= 0:
                return record
            await _wait_event(event, min(remaining, 1.0))

    def _announced_end(self, job_id: str, submitted: JobRecord | None) -> JobRecord | None:
        """The job as its done message told its end, when it carried one (no read needed)."""
        if submitted is None or self._notifier is None:
            return None
        announced = self._notifier.announced(job_id)
        return None if announced is None else lifecycle.ended_as_announced(submitted, announced)

    async def read_chunks(
        self, job_id: str, cursor: str = "0-0", count: int = 1000, block_ms: int | None = None
    ) -> list[Chunk]:
        """Chunks after `cursor`, in order; with `block_ms`, wait that long for the first one."""
        reply = await self.redis.xread({keys.chunks(job_id): cursor}, count=count, block=block_ms)
        if not reply:
            return []
        return [Chunk(cursor=eid.decode(), output=msgspec.Raw(f[b"d"])) for eid, f in reply[0][1]]

    async def drain_chunks(self, job_id: str, count: int = 10_000) -> tuple[Status, list[Chunk]] | None:
        """RunPod's /stream: chunks not yet returned by an earlier call, and the status."""
        if not keys.valid_id(job_id):
            return None
        reply = await self._lib.call("drain", [keys.job(job_id), keys.chunks(job_id)], [count])
        if reply[0] == b"missing":
            return None
        chunks = [Chunk(cursor=e[0].decode(), output=msgspec.Raw(e[1][1])) for e in reply[1]]
        return Status(reply[0].decode()), chunks

    async def cancel(self, job_id: str, now: int | None = None) -> JobRecord | None:
        """Cancel a queued (removed at once) or running (its worker is told) job.

        A finished job is returned unchanged; None means unknown.
        """
        result = await self._transition(job_id, Event.CANCEL, now or now_ms())
        if result.outcome == "missing":
            return None
        return await self.get(job_id)

    async def retry(self, job_id: str, now: int | None = None) -> JobRecord:
        """Queue a FAILED or TIMED_OUT job again with its original input and id."""
        now = now or now_ms()
        result = await self._transition(
            job_id, Event.RETRY, now,
            set_={"score": now, "tries": 0, "submitted_at": now},
            delete=("output", "error", "started_at", "finished_at", "worker_id", "cursor",
                    "remote", "deadline"),
        )
        if result.outcome == "missing":
            raise NotFound(f"job '{job_id}' not found (unknown, or its result expired)")
        if result.outcome != "ok":
            raise Conflict(
                f"job '{job_id}' is {result.status}; only FAILED or TIMED_OUT jobs can be retried"
            )
        record = await self.get(job_id)
        assert record is not None
        return record

    async def purge(self, endpoint: str, now: int | None = None) -> int:
        """End every queued job of `endpoint` CANCELLED; running jobs go on. Returns the count."""
        _check_id(endpoint, "endpoint")
        now, removed = now or now_ms(), 0
        while True:  # batches (serverless/lua/purge.lua), so Redis stays responsive
            batch, seen = await self._lib.call(
                "purge", [keys.queue(endpoint)], [endpoint, now, PURGE_ERROR, PURGE_BATCH, removed]
            )
            removed += int(batch)
            if int(seen) < PURGE_BATCH:
                return removed

    async def health(self, endpoint: str, now: int | None = None) -> Health:
        """Job and worker counts in O(1) for jobs (and O(workers) for workers)."""
        now = now or now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.queue(endpoint))
            pipe.zcard(keys.leases(endpoint))
            pipe.hgetall(keys.stats(endpoint))
            pipe.hvals(keys.workers(endpoint))
            queued, running, stats, beats = await pipe.execute()
        counts = {k.decode(): int(v) for k, v in stats.items()}
        jobs = JobCounts(
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            inProgress=running,
            inQueue=queued,
            retried=counts.get("retried", 0),
        )
        workers = lifecycle.worker_counts([beat_decoder.decode(b) for b in beats], now, self.stale_after_ms)
        return Health(jobs=jobs, workers=workers)

    async def queue_stats(self, endpoint: str, now: int | None = None) -> QueueStats:
        """Queue length (all, and without lowPriority), oldest normal wait, running count."""
        now = now or now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.queue(endpoint))
            pipe.zcount(keys.queue(endpoint), "-inf", f"({keys.LOW_PRIORITY_OFFSET}")
            pipe.zrange(keys.queue(endpoint), 0, 0, withscores=True)
            pipe.zcard(keys.leases(endpoint))
            total, normal, oldest, running = await pipe.execute()
        oldest_score = oldest[0][1] if oldest and oldest[0][1] < keys.LOW_PRIORITY_OFFSET else None
        wait = max(0, now - int(oldest_score)) if oldest_score is not None else 0
        return QueueStats(in_queue=total, in_queue_normal=normal, oldest_wait_ms=wait, in_progress=running)

    @property
    def stale_after_ms(self) -> int:
        return 3 * self.settings.heartbeat_ms

    # ---- worker side --------------------------------------------------------------------

    async def take(self, endpoint: str, worker_id: str, now: int | None = None) -> TakenJob | None:
        """Take the oldest queued job, leased to `worker_id`; None when the queue is empty."""
        taken = await self.take_many(endpoint, worker_id, 1, now)
        return taken[0] if taken else None

    async def take_many(
        self, endpoint: str, worker_id: str, count: int, now: int | None = None
    ) -> list[TakenJob]:
        """Take up to `count` of the oldest queued jobs in one round trip (a worker asks for
        as many as it has free slots), each leased to `worker_id`; [] when none is queued."""
        reply = await self._lib.call(
            "take", [keys.queue(endpoint), keys.leases(endpoint)],
            [endpoint, now or now_ms(), self.settings.lease_ms, worker_id, TTL_ERROR, count],
        )
        return [taken_from_reply(endpoint, item) for item in reply]

    # ---- RunPod-protocol workers (the gateway's worker routes act for them) ---------------

    async def take_for_runpod(
        self, endpoint: str, worker_id: str, count: int, execution_timeout_ms: int,
        now: int | None = None,
    ) -> list[TakenJob]:
        """take_many for a worker that speaks RunPod's protocol: the lease lasts three of its
        ping intervals, podq keeps the job's executionTimeout deadline (the SDK never enforces
        one; `execution_timeout_ms` applies when the job has none) and remembers the hand-off,
        so a worker that says it holds nothing gives the job back (`release_runpod_worker`)."""
        reply = await self._lib.call(
            "take",
            [keys.queue(endpoint), keys.leases(endpoint), keys.deadlines(endpoint),
             keys.held(endpoint, worker_id)],
            [endpoint, now or now_ms(), self.settings.runpod_lease_ms, worker_id, TTL_ERROR, count,
             execution_timeout_ms],
        )
        return [taken_from_reply(endpoint, item) for item in reply]

    async def ping_runpod_jobs(
        self, endpoint: str, worker_id: str, job_ids: list[str], now: int | None = None
    ) -> list[str]:
        """Renew the leases of the jobs a RunPod worker's ping lists (those it still holds);
        returns the listed jobs it keeps running after they were cancelled or timed out (their
        stop is sent again on its job-stop)."""
        if not job_ids:
            return []
        deadline = (now or now_ms()) + self.settings.runpod_lease_ms
        stuck = await self._lib.call(
            "ping", [keys.leases(endpoint), keys.stops(endpoint, worker_id)],
            [deadline, worker_id, *job_ids],
        )
        return [x.decode() for x in stuck]

    async def release_runpod_worker(self, endpoint: str, worker_id: str, now: int | None = None) -> int:
        """The worker holds no job: requeue every job still IN_PROGRESS under it (lost hand-offs)."""
        return int(await self._lib.call(
            "release", [keys.held(endpoint, worker_id)], [endpoint, worker_id, now or now_ms()]
        ))

    async def pop_stops(self, endpoint: str, worker_id: str, timeout_s: float) -> list[str]:
        """Job ids the worker must stop (cancelled, timed out), each handed out once; waits up
        to `timeout_s` for the first."""
        key = keys.stops(endpoint, worker_id)
        first = await self.redis.blpop([key], timeout=timeout_s)
        if first is None:
            return []
        rest = await self.redis.lpop(key, 1000) or []
        return [first[1].decode(), *(x.decode() for x in rest)]

    async def worker(self, endpoint: str, worker_id: str) -> WorkerBeat | None:
        raw = await self.redis.hget(keys.workers(endpoint), worker_id)
        return None if raw is None else beat_decoder.decode(raw)

    async def renew(self, endpoint: str, attempts: dict[str, int], now: int | None = None) -> list[str]:
        """Extend the leases of running jobs; returns the ids this worker no longer holds."""
        if not attempts:
            return []
        pairs = [x for job_id, attempt in attempts.items() for x in (job_id, attempt)]
        deadline = (now or now_ms()) + self.settings.lease_ms
        lost = await self._lib.call("renew", [keys.leases(endpoint)], [deadline, *pairs])
        return [x.decode() for x in lost]

    async def progress(self, job_id: str, attempt: int, output: bytes) -> bool:
        result = await self._transition(
            job_id, Event.PROGRESS, now_ms(), attempt=attempt, set_={"output": output}
        )
        return result.outcome == "ok"

    async def append_chunks(self, job_id: str, attempt: int, chunks: list[bytes]) -> bool:
        """Append chunks in order; False when this attempt no longer owns the job."""
        reply = await self._lib.call(
            "chunks", [keys.job(job_id), keys.chunks(job_id)], [attempt, CHUNK_STREAM_MAXLEN, *chunks]
        )
        return reply[0] == b"ok"

    async def finish(
        self,
        job_id: str,
        attempt: int,
        status: Status,
        *,
        output: bytes | None = None,
        error: str | None = None,
        now: int | None = None,
    ) -> TransitionResult:
        """Write the final result, fenced: only the attempt that holds the job may write it."""
        event = _FINISH_EVENTS[status]
        set_: dict[str, Any] = {}
        if output is not None:
            set_["output"] = output
        if error is not None:
            set_["error"] = error
        delete = () if output is not None else ("output",)
        return await self._transition(
            job_id, event, now or now_ms(), attempt=attempt, set_=set_, delete=delete
        )

    async def requeue(self, job_id: str, attempt: int, now: int | None = None) -> bool:
        """Give a running job back to the queue (worker drain); the try is not counted."""
        result = await self._transition(
            job_id, Event.REQUEUE, now or now_ms(), attempt=attempt,
            set_={"+tries": -1}, delete=("output", "started_at", "worker_id", "remote", "deadline"),
        )
        return result.outcome == "ok"

    async def reap(self, endpoint: str, now: int | None = None, limit: int = 200) -> tuple[int, int]:
        """Requeue (or fail, when out of attempts) jobs whose lease expired, and end TIMED_OUT
        the jobs of RunPod-protocol workers past their executionTimeout. Returns (requeued,
        failed); timed-out jobs are announced like any other end (done channel, job-stop).

        Held back (0, 0) for a while after this process last failed to reach Redis
        (`note_unreachable`): an outage longer than a lease makes every running job's lease look
        expired, and a reaper that reconnects before their workers have renewed would requeue
        jobs that are still running.
        """
        if self.reaping_held():
            return 0, 0
        try:
            if clock.due():  # leases are compared on Redis's clock (serverless/clock.py)
                await clock.sync(self.redis)
            requeued, failed, _ = await self._lib.call(
                "reap", [keys.leases(endpoint), keys.deadlines(endpoint)],
                [
                    endpoint, now or now_ms(), self.settings.max_attempts,
                    lifecycle.LEASE_LOST_ERROR, limit, TIMEOUT_ERROR,
                ],
            )
        except (RedisError, OSError):
            self.note_unreachable()
            raise
        return int(requeued), int(failed)

    async def expire_queued(self, endpoint: str, now: int | None = None, limit: int = 256) -> int:
        """End TIMED_OUT the queued jobs (of the oldest `limit`) whose ttl has passed: take does
        it for what it pops, this is for an endpoint no worker takes from. Returns how many."""
        return int(await self._lib.call("expire", [keys.queue(endpoint)],
                                        [endpoint, now or now_ms(), TTL_ERROR, limit]))

    def note_unreachable(self) -> None:
        """Redis could not be reached just now: reaping waits `reap_hold_ms` from here. A
        failed reap notes it itself; the gateway's reaper and the scaler's tick note the failures
        of the calls they make before reaping (a worker reaps every heartbeat, so its own reap
        meets any outage)."""
        self._unreachable_at = time.monotonic()

    @property
    def reap_hold_ms(self) -> int:
        """How long reaping waits after Redis was unreachable: one lease (a RunPod worker's
        ping interval, when longer) and a heartbeat, in which every live worker renews."""
        s = self.settings
        return max(s.lease_ms, s.runpod_ping_ms) + s.heartbeat_ms

    def reaping_held(self) -> bool:
        at = self._unreachable_at
        return at is not None and (time.monotonic() - at) * 1000 < self.reap_hold_ms

    async def endpoints(self) -> list[str]:
        return sorted(x.decode() for x in await self.redis.smembers(keys.ENDPOINTS))

    async def beat(self, beat: WorkerBeat) -> None:
        await self.redis.hset(keys.workers(beat.endpoint), beat.id, encode_json(beat))

    async def remove_worker(self, endpoint: str, worker_id: str) -> None:
        await self.redis.hdel(keys.workers(endpoint), worker_id)

    async def workers(self, endpoint: str) -> list[WorkerBeat]:
        return [beat_decoder.decode(b) for b in await self.redis.hvals(keys.workers(endpoint))]

    # ---- internals ----------------------------------------------------------------------

    async def _transition(
        self,
        job_id: str,
        event: Event,
        now: int,
        *,
        attempt: int | None = None,
        set_: dict[str, Any] | None = None,
        delete: tuple[str, ...] = (),
    ) -> TransitionResult:
        if not keys.valid_id(job_id):
            return TransitionResult("missing")
        if event in lifecycle.FENCED_EVENTS and attempt is None:
            raise ValueError(f"{event} is a fenced write and needs the worker's attempt")
        pairs = [x for kv in (set_ or {}).items() for x in kv]
        args = [
            job_id, lifecycle.TRANSITIONS[event][1].value, lifecycle.sources_arg(event),
            "" if attempt is None else attempt, now, len(pairs) // 2, *pairs, *delete,
        ]
        reply = await self._lib.call("transition", [keys.job(job_id)], args)
        status = Status(reply[1].decode()) if len(reply) > 1 else None
        return TransitionResult(reply[0].decode(), status)


_FINISH_EVENTS = {
    Status.COMPLETED: Event.COMPLETE,
    Status.FAILED: Event.FAIL,
    Status.TIMED_OUT: Event.TIME_OUT,
}


async def _wait_event(event: asyncio.Event, timeout_s: float) -> None:
    if event.is_set():
        return
    try:  # asyncio.timeout, not wait_for: no task per wait (one per /runsync request)
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        pass


def _check_id(value: str, kind: str) -> None:
    if not keys.valid_id(value):
        raise BadRequest(
            f"invalid {kind} id {value!r}: use 1-128 letters, digits, '_', '.', ':' or '-'"
        )
