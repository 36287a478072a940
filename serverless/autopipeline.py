"""AutoPipeline: the short Redis commands that concurrent tasks issue in one event-loop turn are
sent to Redis together, on one connection the pipeline keeps for itself.

Under load a gateway answers dozens of /runsync requests in the same loop turn, and each one
used to check out its own pool connection, write its own command and wait for its own reply:
one send and one receive system call, and one readiness event in Redis, per command. Here a
command joins the batch of the current turn; the batch is written once at the end of the turn
(no MULTI/EXEC: the commands are independent) and each caller gets its own reply or its own
error. A lone command goes out the same way with one turn of delay (microseconds), so
sequential latency does not change. ioredis and Valkey GLIDE call this auto-pipelining; redis-py
has none, so this is the small part podq writes itself.

How the connection is driven (`_Link`), and why not through redis-py's pool: redis-py opens and
authenticates the connection with the pool's settings, then the pipeline drives its transport
with an asyncio Protocol of its own (serverless/redis_link.py). Each batch is packed by hiredis's
C packer and written at once, with no task and no pool checkout; replies are parsed by a hiredis
Reader inside `data_received`, which answers each caller's future in order (Redis answers one
connection's commands in the order they came). A batch sent while the previous one is in flight
follows it on the same connection. Through the pool, each batch was a task that checked out a
connection, wrote, and awaited redis-py's parser once per reply: 41.7 instead of 26.7 µs of
client CPU per lone round trip (docs/job-store.md, "Round trips"), and a worker under load makes
about one round trip per job. Replies are raw (no redis-py response callback runs: HGETALL
answers a flat list; `pairs` makes it a dict) and error replies are the exception classes
redis-py's parser would raise.

Failures: when the connection is lost, every command written and not yet answered fails with
redis-py's ConnectionError (it may or may not have run, as with any client), and the next turn
opens a new connection. As with redis-py's pool connections here (podq sets no socket_timeout),
a reply is awaited without a time limit while the connection stays up.

Each round trip can be timed for the gateway's /metrics (`ROUND_TRIP_OBSERVERS`): one clock read
per batch, not per command, and none while no observer is registered.

Only commands that answer at once belong on a shared pipeline: a blocking command (BLPOP, XREAD
BLOCK) would hold every command sent after it. A pipeline of its own may carry one blocking
command at a time, and what is sent behind it runs when it returns (a worker's doorbell and the
take behind it, serverless/doorbell.py). A caller that is
cancelled does not cancel its command (it is already on its way with the others); its reply is
dropped, as a reply that arrives after a client disconnects is.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from serverless.redis_link import ReplyProtocol, release, reply_reader, take_over

MAX_BATCH = 512  # commands per write; a bigger turn is split into several writes
# Called with the seconds each round trip took (serverless/gateway/metrics.py registers one per
# gateway app while it runs); process-wide, as the round trips are.
ROUND_TRIP_OBSERVERS: list[Callable[[float], None]] = []

Pending = tuple[tuple[Any, ...], asyncio.Future[Any]]


def shared(redis: Redis) -> AutoPipeline:
    """The AutoPipeline of `redis`: one per client, so every store built on a client shares one
    connection, and closing it (JobStore.close, before the client's own aclose) closes that
    connection for all of them."""
    pipeline = getattr(redis, "_podq_autopipeline", None)
    if pipeline is None:
        pipeline = AutoPipeline(redis)
        redis._podq_autopipeline = pipeline  # type: ignore[attr-defined]
    return pipeline


class AutoPipeline:
    """One per Redis client and event loop; `execute` is redis-py's `execute_command`, batched."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[Pending] = []
        self._link: _Link | None = None
        self._opening: asyncio.Task[None] | None = None
        self._waiting_for_link: list[Pending] = []

    async def execute(self, *args: Any) -> Any:
        """Send one command with whatever else this turn sends; its reply, or raise its error."""
        return await self.send(*args)

    def send(self, *args: Any) -> asyncio.Future[Any]:
        """`execute` without the wait: the command joins this turn's batch and the future gets
        its reply. Commands sent in one turn are written together, in the order sent."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((args, future))
        return future

    async def aclose(self) -> None:
        """Close the pipeline's connection (commands in flight fail); a later call reopens one."""
        if self._opening is not None:
            self._opening.cancel()
            await asyncio.gather(self._opening, return_exceptions=True)
        if self._link is not None:
            link, self._link = self._link, None
            await link.close(self.redis)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        link = self._link
        if link is not None and link.usable:
            link.send(batch)
            return
        self._waiting_for_link.extend(batch)
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        try:
            link = await _Link.open(self.redis)
        except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error
            waiting, self._waiting_for_link = self._waiting_for_link, []
            error = e if isinstance(e, Exception) else RedisConnectionError(repr(e))
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(e, Exception):
                raise
            return
        finally:
            self._opening = None
        self._link = link
        waiting, self._waiting_for_link = self._waiting_for_link, []
        link.send(waiting)


class _Link(ReplyProtocol):
    """One connection opened by redis-py, then written and read by this protocol (module
    docstring): `send` writes a batch at once; each reply answers the oldest caller waiting."""

    lost_note = "; the command may or may not have run"

    def __init__(self, reader: hiredis.Reader) -> None:
        super().__init__(reader)
        # one entry per command written and not yet answered: (its future, the batch's start
        # time on the batch's last command when round trips are timed, else 0.0)
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.WriteTransport | None = None
        self.open = False

    @classmethod
    async def open(cls, redis: Redis) -> _Link:
        link = cls(reply_reader(redis))
        link.taken = await take_over(redis, link)
        link._transport = link.taken.transport
        link.open = True
        return link

    @property
    def usable(self) -> bool:
        """Open, and not closing (a transport that is closing drops what is written to it)."""
        return self.open and self._transport is not None and not self._transport.is_closing()

    def send(self, batch: list[Pending]) -> None:
        assert self._transport is not None
        started = time.perf_counter() if ROUND_TRIP_OBSERVERS else 0.0
        for i in range(0, len(batch), MAX_BATCH):
            part = batch[i:i + MAX_BATCH]
            try:
                packed = b"".join([hiredis.pack_command(args) for args, _ in part])
            except Exception:  # noqa: BLE001 - an argument hiredis cannot pack fails its caller
                packed = self._pack_each(part)
            else:
                self._waiting.extend((future, 0.0) for _, future in part)
            if started and self._waiting:
                future, _ = self._waiting.pop()
                self._waiting.append((future, started))
            self._transport.write(packed)

    def _pack_each(self, part: list[Pending]) -> bytes:
        """Pack command by command: a command whose argument hiredis refuses (None, an object)
        fails its own caller with that error and is not sent; the rest go."""
        packed = []
        for args, future in part:
            try:
                packed.append(hiredis.pack_command(args))
            except Exception as e:  # noqa: BLE001
                if not future.done():
                    future.set_exception(e)
                continue
            self._waiting.append((future, 0.0))
        return b"".join(packed)

    async def close(self, redis: Redis) -> None:
        if self.taken is not None:
            await release(redis, self.taken)

    # ---- ReplyProtocol ---------------------------------------------------------------------

    def on_reply(self, reply: Any) -> None:
        future, started = self._waiting.popleft()
        if started:
            took = time.perf_counter() - started
            for observe in ROUND_TRIP_OBSERVERS:
                observe(took)
        if future.done():  # the caller was cancelled meanwhile
            return
        if isinstance(reply, Exception):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def on_lost(self, error: Exception) -> None:
        """Every command written and not yet answered fails with `error`."""
        self.open = False
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)


def pairs(reply: list[Any] | dict[Any, Any]) -> dict[Any, Any]:
    """A raw HGETALL reply (field, value, field, value...) as a dict."""
    if isinstance(reply, dict):  # RESP3
        return reply
    it = iter(reply)
    return dict(zip(it, it))
