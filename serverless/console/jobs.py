"""Recent jobs per endpoint, for the console's jobs page, and "retry all failed".

The job store indexes jobs by queue (queued ones) and lease (running ones) only; a finished job
is reachable by id alone. The console needs "the latest jobs of an endpoint", so the submit
function (serverless/lua/submit.lua) also adds each new job to a capped sorted set:

    podq:ep:{ep}:recent   ZSET  job id, score = submit ms; the newest keys.RECENT_CAP kept

(one ZADD and one ZREMRANGEBYRANK per submit, in the same call). A job whose record expired
(its retention ran out) is skipped when read and dropped from the set then.
"""

from __future__ import annotations

from serverless import keys
from serverless.codec import record_from_hash
from serverless.errors import Conflict
from serverless.model import RETRYABLE_STATUSES, JobRecord, Status
from serverless.store import JobStore

SHOWN = 100
# the record fields a listing needs (the input and output can be large: left out)
_FIELDS = ("id", "endpoint", "status", "submitted_at")


async def recent(store: JobStore, endpoint: str, status: Status | None = None,
                 limit: int = SHOWN) -> list[JobRecord]:
    """The endpoint's newest jobs (of `status`, when given) among the last RECENT_CAP, newest
    first, at most `limit`. Expired ones are dropped from the index on the way."""
    key = keys.RECENT.format(endpoint)
    ids = [x.decode() for x in await store.redis.zrevrange(key, 0, keys.RECENT_CAP - 1)]
    if not ids:
        return []
    async with store.redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(keys.job(job_id), _FIELDS)
        replies = await pipe.execute()
    found, gone = [], []
    for job_id, values in zip(ids, replies):
        if values[2] is None:
            gone.append(job_id)
            continue
        record = record_from_hash({k.encode(): v for k, v in zip(_FIELDS, values) if v is not None}
                                  | {b"input": b"null"})
        if status is None or record.status is status:
            found.append(record)
    if gone:
        await store.redis.zrem(key, *gone)
    return found[:limit]


async def retry_failed(store: JobStore, endpoint: str) -> int:
    """Queue again every FAILED or TIMED_OUT job among the endpoint's recent ones; the count."""
    retried = 0
    for status in RETRYABLE_STATUSES:
        for job in await recent(store, endpoint, status, keys.RECENT_CAP):
            try:
                await store.retry(job.id)
                retried += 1
            except Conflict:  # retried by someone else meanwhile
                pass
    return retried

