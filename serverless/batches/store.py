"""BatchStore: batches in Redis. The keys a batch uses are spelled in serverless/keys.py (its
docstring says what each holds): the batch's hash keys.batch(id) and its parts
keys.batch_inflight(id), keys.batch_ready(id) and keys.batch_lease(id), and the batch lists
keys.BATCHES (every batch) and keys.BATCHES_ACTIVE (the ones a runner must drive).

Redis holds, per batch, at most max_in_flight jobs and in-flight entries and at most
plan.window() ready lines: never the file. Each runner step is one MULTI/EXEC, so a crash
leaves the batch at the end of a step (runner.py explains why every step is safe to redo).
The state moves (cancel, finish, a new round) are compare-and-set scripts, so a cancel and the
runner's own end never overwrite each other (this small script lives with its owner rather
than in serverless/lua/: it touches no job). The runner's lease is serverless/lease.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from serverless import keys
from serverless.batches import plan
from serverless.lease import Leases
from serverless.batches.model import ACTIVE_STATES, RESULT_STATUSES, Batch, BatchState, Cursor

LIST_MAX = 1000


class Meta(msgspec.Struct, kw_only=True):
    """What is fixed when a batch is created."""

    id: str
    endpoint_id: str
    format: str
    total: int
    created_at: int
    input_key: str
    max_in_flight: int
    low_priority: bool = True
    execution_timeout_ms: int | None = None
    source: str = ""
    input_bytes: int = 0
    header: list[str] | None = None  # CSV columns
    start: Cursor = Cursor()  # where inputs start (after a CSV header)


class Row(msgspec.Struct, kw_only=True):
    """A batch as stored: its Meta and where it stands."""

    meta: Meta
    state: BatchState
    round: int = 0
    cursor: Cursor = Cursor()
    exhausted: bool = False  # this round has read the whole file
    written: int = 0
    counts: dict[str, int] = {}
    rate: float = 0.0
    started_at: int = 0
    finished_at: int | None = None
    in_flight: int = 0


_meta = msgspec.json.Decoder(Meta)
_CAS = """
local now = redis.call('HGET', KEYS[1], 'state')
if not now then return 0 end
for i = 3, #ARGV do if ARGV[i] == now then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], unpack(cjson.decode(ARGV[2])))
  if ARGV[1] == 'RUNNING' or ARGV[1] == 'CANCELLING' then redis.call('SADD', KEYS[2], KEYS[3])
  else redis.call('SREM', KEYS[2], KEYS[3]) end
  return 1
end end
return 0
"""
class LeaseLost(Exception):
    """A runner step was refused: another gateway holds the batch's lease now."""


def _row(fields: dict[bytes, bytes], in_flight: int) -> Row:
    f = {k.decode(): v for k, v in fields.items()}
    num = lambda name, default=0: int(f[name]) if name in f else default  # noqa: E731
    return Row(
        meta=_meta.decode(f["meta"]), state=BatchState(f["state"].decode()), round=num("round"),
        cursor=Cursor(num("c_index"), num("c_offset"), num("c_line", 1)),
        exhausted=f.get("exhausted") == b"1", written=num("written"),
        counts={s: num(s) for s in RESULT_STATUSES}, rate=float(f.get("rate", b"0")),
        started_at=num("started_at"), finished_at=num("finished_at") if "finished_at" in f else None,
        in_flight=in_flight,
    )


def _cursor_fields(c: Cursor) -> dict[str, int]:
    return {"c_index": c.index, "c_offset": c.offset, "c_line": c.line}


class BatchStore:
    """Batch reads and writes on one Redis client."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._cas = redis.register_script(_CAS)
        self._leases = Leases(redis)

    # ---- records ----------------------------------------------------------------------

    async def create(self, meta: Meta, now: int) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.batch(meta.id), mapping={
                "meta": msgspec.json.encode(meta), "state": BatchState.RUNNING.value, "round": 0,
                **_cursor_fields(meta.start), "written": 0, "started_at": now,
            })
            pipe.zadd(keys.BATCHES, {meta.id: meta.created_at})
            pipe.sadd(keys.BATCHES_ACTIVE, meta.id)
            await pipe.execute()

    async def read(self, batch_id: str) -> Row | None:
        if not keys.valid_id(batch_id):
            return None
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.batch(batch_id))
            pipe.scard(keys.batch_inflight(batch_id))
            fields, in_flight = await pipe.execute()
        return _row(fields, in_flight) if fields and b"meta" in fields else None

    async def ids(self) -> list[str]:
        """The newest LIST_MAX batches, newest first."""
        return [x.decode() for x in await self.redis.zrevrange(keys.BATCHES, 0, LIST_MAX - 1)]

    async def active(self) -> list[str]:
        return sorted(x.decode() for x in await self.redis.smembers(keys.BATCHES_ACTIVE))

    async def delete(self, batch_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.batch(batch_id), keys.batch_inflight(batch_id),
                        keys.batch_ready(batch_id), keys.batch_lease(batch_id))
            pipe.zrem(keys.BATCHES, batch_id)
            pipe.srem(keys.BATCHES_ACTIVE, batch_id)
            await pipe.execute()

    # ---- state moves (compare-and-set) -------------------------------------------------

    async def move(self, batch_id: str, to: BatchState, sources: Iterable[BatchState],
                   fields: Mapping[str, str | int | float] | None = None) -> bool:
        """Set the state to `to` (and `fields`) if it is one of `sources`; False otherwise."""
        flat = [str(x) for kv in (fields or {}).items() for x in kv]
        args = [to.value, msgspec.json.encode(flat), *(s.value for s in sources)]
        return bool(await self._cas(keys=[keys.batch(batch_id), keys.BATCHES_ACTIVE, batch_id], args=args))

    async def new_round(self, row: Row, now: int) -> bool:
        """A retry round: the failed inputs run again, the others are carried over."""
        fields = {"round": row.round + 1, **_cursor_fields(row.meta.start), "exhausted": 0,
                  "written": 0, "FAILED": 0, "TIMED_OUT": 0, "rate": 0, "started_at": now}
        moved = await self.move(row.meta.id, BatchState.RUNNING, [BatchState.COMPLETED], fields)
        if moved:
            await self.redis.hdel(keys.batch(row.meta.id), "finished_at")
        return moved

    # ---- runner steps (one MULTI each, fenced by the runner's lease) ----------------------

    @asynccontextmanager
    async def _fenced(self, batch_id: str, owner: str) -> AsyncIterator[Pipeline]:
        """A MULTI that runs only while `owner` holds the batch's lease: the lease key is
        WATCHed and read first, so a runner that lost its lease (paused past its TTL while
        another gateway took over) raises LeaseLost instead of writing a step."""
        lease = keys.batch_lease(batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(lease)
            if await pipe.get(lease) != owner.encode():
                raise LeaseLost(f"batch {batch_id}: its lease is no longer {owner}'s")
            pipe.multi()
            yield pipe
            try:
                await pipe.execute()
            except WatchError:
                raise LeaseLost(f"batch {batch_id}: its lease changed during a step") from None

    async def advance(self, batch_id: str, owner: str, cursor: Cursor, exhausted: bool,
                      submitted: Iterable[int], ready: Mapping[int, bytes],
                      counted: Mapping[str, int]) -> None:
        """Inputs read: the cursor moves past them, submitted ones are in flight, the others
        (unreadable, or carried over from the last round) are ready results."""
        async with self._fenced(batch_id, owner) as pipe:
            pipe.hset(keys.batch(batch_id),
                      mapping={**_cursor_fields(cursor), "exhausted": int(exhausted)})
            if submitted := list(submitted):
                pipe.sadd(keys.batch_inflight(batch_id), *submitted)
            self._add_ready(pipe, batch_id, ready, counted)

    async def collect(self, batch_id: str, owner: str, ready: Mapping[int, bytes],
                      counted: Mapping[str, int], job_ids: Iterable[str], keep_ms: int = 0) -> None:
        """Finished jobs: their lines are ready, they leave the in-flight set, and their job
        records are deleted (the line holds all a batch user reads; Redis keeps no more), or
        with `keep_ms` expire that much later (an endpoint webhook still reads them)."""
        job_ids = list(job_ids)
        async with self._fenced(batch_id, owner) as pipe:
            if ready:
                pipe.srem(keys.batch_inflight(batch_id), *ready)
            self._add_ready(pipe, batch_id, ready, counted)
            if job_ids and keep_ms:
                for key in (*(keys.job(j) for j in job_ids), *(keys.chunks(j) for j in job_ids)):
                    pipe.pexpire(key, keep_ms)
            elif job_ids:
                pipe.delete(*(keys.job(j) for j in job_ids), *(keys.chunks(j) for j in job_ids))

    @staticmethod
    def _add_ready(pipe, batch_id: str, ready: Mapping[int, bytes], counted: Mapping[str, int]) -> None:  # type: ignore[no-untyped-def]
        if ready:
            pipe.hset(keys.batch_ready(batch_id), mapping=dict(ready))
        for status, n in counted.items():
            if n:
                pipe.hincrby(keys.batch(batch_id), status, n)

    async def in_flight(self, batch_id: str) -> set[int]:
        return {int(x) for x in await self.redis.smembers(keys.batch_inflight(batch_id))}

    async def ready(self, batch_id: str) -> set[int]:
        return {int(x) for x in await self.redis.hkeys(keys.batch_ready(batch_id))}

    async def lines(self, batch_id: str, start: int, n: int) -> list[bytes]:
        raw = await self.redis.hmget(keys.batch_ready(batch_id), list(range(start, start + n)))
        assert all(x is not None for x in raw), "a ready run has a gap"
        return raw

    async def written(self, batch_id: str, owner: str, start: int, n: int) -> None:
        """A results part [start, start + n) is stored: its lines leave Redis."""
        async with self._fenced(batch_id, owner) as pipe:
            pipe.hdel(keys.batch_ready(batch_id), *range(start, start + n))
            pipe.hset(keys.batch(batch_id), "written", start + n)

    async def set_rate(self, batch_id: str, rate: float) -> None:
        await self.redis.hset(keys.batch(batch_id), "rate", f"{rate:.3f}")

    # ---- the runner's lease ------------------------------------------------------------

    async def take_lease(self, batch_id: str, owner: str, ttl_ms: int) -> bool:
        return await self._leases.take(keys.batch_lease(batch_id), owner, ttl_ms)

    async def renew_lease(self, batch_id: str, owner: str, ttl_ms: int) -> bool:
        return await self._leases.renew(keys.batch_lease(batch_id), owner, ttl_ms)

    async def release_lease(self, batch_id: str, owner: str) -> None:
        await self._leases.release(keys.batch_lease(batch_id), owner)


def to_batch(row: Row, results_url: str) -> Batch:
    """The reply of GET /v1/batches/{id} (pure)."""
    m = row.meta
    counts = plan.counts(row.counts, total=m.total, next_index=row.cursor.index, in_flight=row.in_flight)
    done = counts.completed + counts.failed + counts.cancelled + counts.timed_out
    active = row.state in ACTIVE_STATES
    return Batch(
        id=m.id, endpoint_id=m.endpoint_id, state=row.state, format=m.format, total=m.total,
        created_at=m.created_at, max_in_flight=m.max_in_flight, low_priority=m.low_priority,
        execution_timeout_ms=m.execution_timeout_ms, source=m.source, input_bytes=m.input_bytes,
        round=row.round, counts=counts, written=row.written, rate=row.rate if active else 0.0,
        eta_s=plan.eta_s(m.total - done, row.rate) if active else None,
        started_at=row.started_at, finished_at=row.finished_at, results_url=results_url,
    )
