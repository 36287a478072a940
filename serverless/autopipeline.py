"""AutoPipeline: the short Redis commands that concurrent tasks issue in one event-loop turn are
sent to Redis together, as one pipeline, on one connection.

Under load a gateway answers dozens of /runsync requests in the same loop turn, and each one
used to check out its own pool connection, write its own command and wait for its own reply:
one send and one receive system call, and one readiness event in Redis, per command. Here a
command joins the batch of the current turn; the batch is written once (`pipeline`, no
MULTI/EXEC: the commands are independent) at the next turn and each caller gets its own reply or
its own error. A lone command goes out the same way with one turn of delay (microseconds), so
sequential latency does not change. ioredis and Valkey GLIDE call this auto-pipelining; redis-py
has none, so this is the small part podq writes itself: the batch is packed by hiredis's C
packer (redis-py's asyncio client packs every argument in Python, the larger cost for FCALLs of
20-odd arguments) and written on a connection of the client's own pool, whose replies are read
with redis-py's parser. Replies are raw: no redis-py response callback runs (HGETALL answers a
flat list; `pairs` makes it a dict).

Each round trip can be timed for the gateway's /metrics (`ROUND_TRIP_OBSERVERS`): one clock read
per batch, not per command, and none while no observer is registered.

Only commands that answer at once belong here: a blocking command (BLPOP, XREAD BLOCK) would
hold every command batched behind it. A caller that is cancelled does not cancel its command
(it is already on its way with the others); its reply is dropped, as a reply that arrives after
a client disconnects is.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ResponseError

# redis-py < 5.3 requires a command name for a pool connection; 5.3+ deprecates passing one
_NAME = inspect.signature(ConnectionPool.get_connection).parameters.get("command_name")
_POOL_ARGS: tuple[str, ...] = (
    ("PIPELINE",) if _NAME is not None and _NAME.default is inspect.Parameter.empty else ())

MAX_BATCH = 512  # commands per pipeline; a bigger turn is split, so no reply grows unbounded
# Called with the seconds each round trip took (serverless/gateway/metrics.py registers one per
# gateway app while it runs); process-wide, as the round trips are.
ROUND_TRIP_OBSERVERS: list[Callable[[float], None]] = []


class AutoPipeline:
    """One per Redis client and event loop; `execute` is redis-py's `execute_command`, batched."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any) -> Any:
        """Send one command with whatever else this turn sends; its reply, or raise its error."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((args, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        for i in range(0, len(batch), MAX_BATCH):
            task = asyncio.ensure_future(self._send(batch[i:i + MAX_BATCH]))
            self._flushing.add(task)  # a reference, so the task is not collected mid-flight
            task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        started = time.perf_counter() if ROUND_TRIP_OBSERVERS else 0.0
        try:
            replies = await self._round_trip(batch)
        except BaseException as e:  # the connection failed (or we were cancelled): all fail
            for _, future in batch:
                if not future.done():
                    future.set_exception(e if isinstance(e, Exception) else ConnectionError(str(e)))
            if not isinstance(e, Exception):
                raise
            return
        if started:
            took = time.perf_counter() - started
            for observe in ROUND_TRIP_OBSERVERS:
                observe(took)
        for (_, future), reply in zip(batch, replies):
            if future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


    async def _round_trip(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> list[Any]:
        """Write every command of `batch` at once and read one reply per command (an error
        reply is returned in its place). A connection that fails midway is closed, not reused:
        its unread replies would answer the next user's commands."""
        pool = self.redis.connection_pool
        connection = await pool.get_connection(*_POOL_ARGS)
        try:
            await connection.send_packed_command(
                b"".join([hiredis.pack_command(args) for args, _ in batch]), check_health=False)
            replies: list[Any] = []
            for _ in batch:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as e:
                    replies.append(e)
            return replies
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)


def pairs(reply: list[Any] | dict[Any, Any]) -> dict[Any, Any]:
    """A raw HGETALL reply (field, value, field, value...) as a dict."""
    if isinstance(reply, dict):  # RESP3
        return reply
    it = iter(reply)
    return dict(zip(it, it))
