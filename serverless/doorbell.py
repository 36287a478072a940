"""A worker's wait on its endpoint's doorbell, and the take that can ride behind it.

An idle worker blocks on the endpoint's bell list (BLPOP, at most a second: the bell is a hint,
the queue is the truth). The wait runs on a pipeline that carries nothing else (its own
connection, serverless/autopipeline.py), and Redis runs one connection's commands in order, so
a take sent behind the pending BLPOP runs the moment the BLPOP returns, in the same Redis turn,
with no round trip back to the worker: a job submitted to an idle endpoint is leased as its ring
wakes the worker, whose first sight of the job is the take's answer (one Redis -> worker ->
Redis crossing fewer per sequential run_sync).

Only an idle worker sends its take behind the bell (`take_behind`: when the wait starts with no
job running, or when the last running job ends during the wait). A take is sized when it is
sent; a busy worker's slots free up while it waits, so it takes after the ring instead, sized
then, and a take that follows a ring by a round trip also finds more jobs queued to take in one
call. Taking behind the bell for busy workers too cost `/run` about 15 % (docs/job-store.md).

The take runs up to `timeout_s` after it was sent, so it reads Redis's clock (TIME) rather than
the worker's `now`. A process whose ACL user may not run TIME (docs/security.md) sends no take
behind the bell: it takes after the ring, with its own `now`, as before. A sent take cannot be
called back: it leases what it finds either way. A worker that stops while waiting calls `wake`
(its BLPOP watches a list of its own besides the bell) and hands back what the take brings
(JobStore.requeue).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ResponseError

from serverless import clock, keys
from serverless.autopipeline import AutoPipeline
from serverless.codec import taken_from_reply
from serverless.functions import function_missing
from serverless.model import TakenJob
from serverless.store import TTL_ERROR, JobStore

WAKE_TTL_MS = 60_000  # an unread wake entry (keys.wake) expires after this


class DoorbellWait:
    """One BLPOP on the endpoint's bell and the worker's wake list, sent at construction."""

    def __init__(self, store: JobStore, line: AutoPipeline, endpoint: str, worker_id: str,
                 timeout_s: float) -> None:
        self.store, self.line = store, line
        self.endpoint, self.worker_id = endpoint, worker_id
        self.bell = line.send("BLPOP", keys.bell(endpoint), keys.wake(endpoint, worker_id),
                              timeout_s)
        self.bell.add_done_callback(_retrieve)  # its reply only times the take
        self._taking: asyncio.Future[Any] | None = None
        self.count = 0  # how many jobs the take behind the BLPOP asks for (0: none sent)

    def take_behind(self, count: int) -> bool:
        """Send a take of up to `count` jobs behind the BLPOP, unless its answer is already here
        or a take was sent; whether one was sent."""
        if self.bell.done() or self._taking is not None or count <= 0:
            return False
        if not clock.may_read_redis_time():  # an ACL without +time: the take needs a `now`
            return False
        take = self.store.library.source.function("take")
        self._taking = self.line.send(
            "FCALL", take, 2, keys.queue(self.endpoint), keys.leases(self.endpoint),
            self.endpoint, "", self.store.settings.lease_ms, self.worker_id, TTL_ERROR, count)
        self.count = count
        return True

    async def wait(self) -> list[TakenJob] | None:
        """Wait for the ring, the wake or the timeout. The jobs the take behind the BLPOP
        leased, or None when no take was sent behind it (the caller takes now, sized now).
        Raises what Redis raised for the BLPOP (without a take) or for the take."""
        if self._taking is None:
            await self.bell
            if self._taking is None:
                return None
        assert self._taking is not None
        try:
            reply = await self._taking
        except ResponseError as e:
            if _time_refused(e):  # TIME is its first command: nothing was taken
                clock.note_time_refused()
            elif not function_missing(e):  # Redis restarted: take_many loads the library again
                raise
            return await self.store.take_many(self.endpoint, self.worker_id, self.count)
        return [taken_from_reply(self.endpoint, item) for item in reply]


async def wake(store: JobStore, endpoint: str, worker_id: str) -> None:
    """Cut short `worker_id`'s doorbell wait: its BLPOP watches this list too. Left unread (the
    wait had ended anyway), the entry expires within a minute; a worker that reuses the id
    meets it as one early take, which is harmless."""
    key = keys.wake(endpoint, worker_id)
    pipeline = store.library.pipeline
    await asyncio.gather(pipeline.execute("LPUSH", key, "1"),
                         pipeline.execute("PEXPIRE", key, WAKE_TTL_MS))


def _time_refused(e: ResponseError) -> bool:
    """The take's TIME was refused by the ACL (its user lost +time since it connected)."""
    return "can't run this command" in str(e) or "no permissions to run the 'time'" in str(e)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
