"""Notifier: one pub/sub connection per process that wakes whoever waits for a job to finish.

The finishing Lua script publishes the job id on its endpoint's done channel; this class holds a
single PSUBSCRIBE to all of them and sets the asyncio.Event of each local waiter. Pub/sub is
only a doorbell: the durable status is in the job hash, and waiters re-read it, so a message
lost during a reconnect delays a waiter by its re-check interval and loses nothing.

For a /runsync job whose worker wrote a small result, the message carries that result too
(`announcement()` in serverless/lua/_lib.lua); it is kept for the job's local waiters
(`announced`), which then answer without reading the job back. Messages for jobs nobody here
waits on are dropped at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

import hiredis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from serverless import keys
from serverless.redis_link import ReplyProtocol, TakenOver, release, reply_reader, take_over

log = logging.getLogger("podq.notify")


class Notifier:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._announced: dict[str, str] = {}  # job id -> the end its message carried
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (once) and return when the subscription is in effect."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="podq-notifier")
        await self._ready.wait()

    @property
    def started(self) -> bool:
        """Subscribed, or resubscribing (start() has returned once)."""
        return self._ready.is_set()

    def register(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        return event

    def unregister(self, job_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]
                self._announced.pop(job_id, None)

    def announced(self, job_id: str) -> str | None:
        """The end of `job_id` as its done message told it (status, times, worker, result;
        lifecycle.ended_as_announced reads it), or None when the message carried only the id."""
        return self._announced.get(job_id)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _wake(self, message: str) -> None:
        job_id, carried, end = message.partition("\n")
        if job_id == keys.PURGED:  # many jobs ended at once: everyone re-reads
            targets = [e for events in self._waiters.values() for e in events]
        else:
            waiters = self._waiters.get(job_id)
            if not waiters:
                return
            if carried:
                self._announced[job_id] = end
            targets = list(waiters)
        for event in targets:
            event.set()

    def _lost(self) -> None:
        self._ready.set()  # waiters fall back to re-reading once a second
        for events in list(self._waiters.values()):
            for event in events:
                event.set()

    async def _run(self) -> None:
        await listen_forever(self._redis, keys.DONE_PATTERN, self._wake, pattern=True,
                             on_ready=self._ready.set, on_lost=self._lost, name="notifier")


async def listen_forever(
    redis: Redis,
    channel: str,
    on_message: Callable[[str], None],
    *,
    pattern: bool = False,
    on_ready: Callable[[], None] = lambda: None,
    on_lost: Callable[[], None] = lambda: None,
    name: str = "subscription",
) -> None:
    """Subscribe to `channel` (a pattern if `pattern`) and call `on_message(data)` for each
    message, resubscribing after a lost connection, until cancelled.

    The subscription has a connection of its own, opened with `redis`'s settings and read by
    `_Subscription` (serverless/redis_link.py): each message is handed to `on_message` in the
    protocol's callback, with no task woken in between (redis-py's PubSub parsed each message in
    Python and woke the listening task, on the path of every /runsync answer).

    Args:
        redis: the client whose connection settings the subscription uses.
        channel: the channel name or pattern.
        on_message: called with each message's data, decoded.
        pattern: PSUBSCRIBE instead of SUBSCRIBE.
        on_ready: called once Redis confirms the subscription (after each reconnect too).
        on_lost: called when the connection is lost, before retrying.
        name: how log lines name this subscription.
    """
    loop = asyncio.get_running_loop()
    command = hiredis.pack_command(("PSUBSCRIBE" if pattern else "SUBSCRIBE", channel))
    while True:
        subscription = _Subscription(reply_reader(redis), on_message, on_ready, loop.create_future(), name)
        taken: TakenOver | None = None
        try:
            taken = subscription.taken = await take_over(redis, subscription)
            taken.transport.write(command)
            raise await subscription.lost
        except (RedisError, OSError) as e:
            log.warning("%s lost its Redis subscription (%s); reconnecting", name, e)
            on_lost()
            await asyncio.sleep(0.5)
        finally:
            if taken is not None:
                await release(redis, taken)


class _Subscription(ReplyProtocol):
    """The protocol of one subscribed connection: messages to `on_message`, confirmations to
    `on_ready`; `lost` gets the error that ended the connection."""

    def __init__(self, reader: hiredis.Reader, on_message: Callable[[str], None],
                 on_ready: Callable[[], None], lost: asyncio.Future[Exception], name: str) -> None:
        super().__init__(reader)
        self._on_message, self._on_ready = on_message, on_ready
        self.lost, self._name = lost, name

    def on_reply(self, reply: object) -> None:
        if isinstance(reply, Exception):  # e.g. NOPERM for the channel: the subscription failed
            self.on_lost(reply)
            return
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if kind in ("message", "pmessage"):
            data = reply[-1]
            try:
                self._on_message(data.decode() if isinstance(data, bytes) else str(data))
            except Exception:  # noqa: BLE001 - one bad message must not end the subscription
                log.exception("%s: handling a message failed", self._name)
        elif kind in ("subscribe", "psubscribe"):
            self._on_ready()

    def on_lost(self, error: Exception) -> None:
        if not self.lost.done():
            self.lost.set_result(error)
